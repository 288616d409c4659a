//! `tollgate-upstream`: the mock LLM provider as a process. See [`tollgate_upstream::cli`] for
//! the command line and the library docs for endpoints and the usage rule.

fn main() -> anyhow::Result<()> {
    tollgate_upstream::cli::main()
}
