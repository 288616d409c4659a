//! Organisations, projects and users: the links of a principal chain that the control plane
//! knows by name. A virtual key records its whole chain when created, so renaming or listing
//! these never changes the snapshot.

use serde::Serialize;

use super::{with_pool, Store, StoreError};

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Org {
    /// Id, as it appears in principal chains.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A project inside an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Project {
    /// Id.
    pub id: String,
    /// Owning organisation.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A user of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// Organisation.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Contact address, if given.
    pub email: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

impl Store {
    /// Creates an organisation; a taken id is a conflict on `id`.
    pub async fn create_org(&self, id: &str, name: &str, now: i64) -> Result<Org, StoreError> {
        with_pool!(self, write, |pool, pg| {
            sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(name)
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| {
                    StoreError::from_constraint(e, "id", format!("organisation {id:?} exists"))
                })?;
        });
        Ok(Org {
            id: id.to_string(),
            name: name.to_string(),
            created_at: now,
        })
    }

    /// One organisation.
    pub async fn get_org(&self, id: &str) -> Result<Org, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Org>("SELECT id, name, created_at FROM orgs WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| not_found("organisation", id))
    }

    /// Every organisation, by id.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Org>("SELECT id, name, created_at FROM orgs ORDER BY id")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Renames an organisation.
    pub async fn rename_org(&self, id: &str, name: &str) -> Result<Org, StoreError> {
        let n = with_pool!(self, write, |pool, pg| {
            sqlx::query("UPDATE orgs SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(not_found("organisation", id));
        }
        self.get_org(id).await
    }

    /// Deletes an organisation that nothing references any more (else a conflict).
    pub async fn delete_org(&self, id: &str) -> Result<(), StoreError> {
        self.delete_row("DELETE FROM orgs WHERE id = $1", "organisation", id)
            .await
    }

    /// Creates a project in an existing organisation.
    pub async fn create_project(
        &self,
        id: &str,
        org_id: &str,
        name: &str,
        now: i64,
    ) -> Result<Project, StoreError> {
        self.get_org(org_id)
            .await
            .map_err(|e| invalid_ref_if_missing(e, "org_id"))?;
        with_pool!(self, write, |pool, pg| {
            sqlx::query(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(org_id)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map_err(|e| StoreError::from_constraint(e, "id", format!("project {id:?} exists")))?;
        });
        Ok(Project {
            id: id.to_string(),
            org_id: org_id.to_string(),
            name: name.to_string(),
            created_at: now,
        })
    }

    /// One project.
    pub async fn get_project(&self, id: &str) -> Result<Project, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Project>(
                "SELECT id, org_id, name, created_at FROM projects WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| not_found("project", id))
    }

    /// Projects, optionally of one organisation, by id.
    pub async fn list_projects(&self, org_id: Option<&str>) -> Result<Vec<Project>, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Project>(
                "SELECT id, org_id, name, created_at FROM projects \
                 WHERE ($1 IS NULL OR org_id = $1) ORDER BY id",
            )
            .bind(org_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Deletes a project no key references.
    pub async fn delete_project(&self, id: &str) -> Result<(), StoreError> {
        self.delete_row("DELETE FROM projects WHERE id = $1", "project", id)
            .await
    }

    /// Creates a user in an existing organisation.
    pub async fn create_user(
        &self,
        id: &str,
        org_id: &str,
        name: &str,
        email: Option<&str>,
        now: i64,
    ) -> Result<User, StoreError> {
        self.get_org(org_id)
            .await
            .map_err(|e| invalid_ref_if_missing(e, "org_id"))?;
        with_pool!(self, write, |pool, pg| {
            sqlx::query(
                "INSERT INTO users (id, org_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(org_id)
            .bind(name)
            .bind(email)
            .bind(now)
            .execute(pool)
            .await
            .map_err(|e| StoreError::from_constraint(e, "id", format!("user {id:?} exists")))?;
        });
        Ok(User {
            id: id.to_string(),
            org_id: org_id.to_string(),
            name: name.to_string(),
            email: email.map(str::to_string),
            created_at: now,
        })
    }

    /// One user.
    pub async fn get_user(&self, id: &str) -> Result<User, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, User>(
                "SELECT id, org_id, name, email, created_at FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| not_found("user", id))
    }

    /// Users, optionally of one organisation, by id.
    pub async fn list_users(&self, org_id: Option<&str>) -> Result<Vec<User>, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, User>(
                "SELECT id, org_id, name, email, created_at FROM users \
                 WHERE ($1 IS NULL OR org_id = $1) ORDER BY id",
            )
            .bind(org_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Deletes a user no key references.
    pub async fn delete_user(&self, id: &str) -> Result<(), StoreError> {
        self.delete_row("DELETE FROM users WHERE id = $1", "user", id)
            .await
    }

    async fn delete_row(&self, sql: &str, what: &'static str, id: &str) -> Result<(), StoreError> {
        let n = with_pool!(self, write, |pool, pg| {
            sqlx::query(sql)
                .bind(id)
                .execute(pool)
                .await
                .map_err(|e| StoreError::from_constraint(e, "id", format!("{what} {id:?}")))?
                .rows_affected()
        });
        if n == 0 {
            return Err(not_found(what, id));
        }
        Ok(())
    }
}

pub(crate) fn not_found(what: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_string(),
    }
}

pub(crate) fn invalid_ref(field: &str, what: &str, id: &str) -> StoreError {
    StoreError::Invalid {
        field: field.to_string(),
        detail: format!("no {what} {id:?}"),
    }
}

/// A missing row referenced from a request body is the body's fault (422 naming the field),
/// not a missing resource of the URL (404).
pub(crate) fn invalid_ref_if_missing(e: StoreError, field: &str) -> StoreError {
    match e {
        StoreError::NotFound { what, id } => invalid_ref(field, what, &id),
        other => other,
    }
}

impl Store {
    /// Whether `id` is registered as a `scope` (an organisation, project, user or virtual key;
    /// a revoked key counts: its spend history stays).
    pub async fn scope_registered(
        &self,
        scope: tollgate_core::budget::Scope,
        id: &str,
    ) -> Result<bool, StoreError> {
        use tollgate_core::budget::Scope;
        let table = match scope {
            Scope::Org => "orgs",
            Scope::Project => "projects",
            Scope::User => "users",
            Scope::Key => "virtual_keys",
        };
        with_pool!(self, read, |pool, pg| {
            let found: Option<i32> =
                sqlx::query_scalar(&format!("SELECT 1 FROM {table} WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.is_some())
        })
    }
}
