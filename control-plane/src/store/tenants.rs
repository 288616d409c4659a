//! Organisations, projects and users: the links of a principal chain that the control plane
//! knows by name. A virtual key records its whole chain when created, so renaming or listing
//! these never changes the snapshot.

use serde::Serialize;

use super::audit::{audit, Change, NONE};
use super::{begin_write, with_pool, Store, StoreError};

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

const SELECT_ORG: &str = "SELECT id, name, created_at FROM orgs";
const SELECT_PROJECT: &str = "SELECT id, org_id, name, created_at FROM projects";
const SELECT_USER: &str = "SELECT id, org_id, name, email, created_at FROM users";

/// Deletes the `$what` `$id` of `$table` (a `$row` read by `$select`) that nothing references
/// (else a conflict), auditing it as `$kind` of the organisation `$org` gives, in one
/// transaction.
macro_rules! delete_audited {
    ($store:expr, $row:ty, $select:expr, $table:literal, $what:literal, $kind:literal, $id:expr, $org:expr) => {{
        let id: &str = $id;
        with_pool!($store, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let before = sqlx::query_as::<_, $row>(sql!("{} WHERE id = $1", $select))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| not_found($what, id))?;
            sqlx::query(concat!("DELETE FROM ", $table, " WHERE id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::from_constraint(e, "id", format!("{} {id:?}", $what)))?;
            let org: String = ($org)(&before);
            audit!(tx, Change::new($kind, id, Some(&org), Some(&before), NONE));
            tx.commit().await?;
            Ok(())
        })
    }};
}

impl Store {
    /// Creates an organisation; a taken id is a conflict on `id`.
    pub async fn create_org(&self, id: &str, name: &str, now: i64) -> Result<Org, StoreError> {
        let org = Org {
            id: id.to_string(),
            name: name.to_string(),
            created_at: now,
        };
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    StoreError::from_constraint(e, "id", format!("organisation {id:?} exists"))
                })?;
            audit!(tx, Change::new("org", id, Some(id), NONE, Some(&org)));
            tx.commit().await?;
        });
        Ok(org)
    }

    /// One organisation.
    pub async fn get_org(&self, id: &str) -> Result<Org, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Org>(sql!("{SELECT_ORG} WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| not_found("organisation", id))
    }

    /// Every organisation, by id.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Org>(sql!("{SELECT_ORG} ORDER BY id"))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Renames an organisation.
    pub async fn rename_org(&self, id: &str, name: &str) -> Result<Org, StoreError> {
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let before = sqlx::query_as::<_, Org>(sql!("{SELECT_ORG} WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| not_found("organisation", id))?;
            sqlx::query("UPDATE orgs SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let after = Org {
                name: name.to_string(),
                ..before.clone()
            };
            audit!(
                tx,
                Change::new("org", id, Some(id), Some(&before), Some(&after))
            );
            tx.commit().await?;
            Ok(after)
        })
    }

    /// Deletes an organisation that nothing references any more (else a conflict).
    pub async fn delete_org(&self, id: &str) -> Result<(), StoreError> {
        delete_audited!(
            self,
            Org,
            SELECT_ORG,
            "orgs",
            "organisation",
            "org",
            id,
            |o: &Org| o.id.clone()
        )
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
        let project = Project {
            id: id.to_string(),
            org_id: org_id.to_string(),
            name: name.to_string(),
            created_at: now,
        };
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            sqlx::query(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(org_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_constraint(e, "id", format!("project {id:?} exists")))?;
            audit!(
                tx,
                Change::new("project", id, Some(org_id), NONE, Some(&project))
            );
            tx.commit().await?;
        });
        Ok(project)
    }

    /// One project.
    pub async fn get_project(&self, id: &str) -> Result<Project, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Project>(sql!("{SELECT_PROJECT} WHERE id = $1"))
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
        delete_audited!(
            self,
            Project,
            SELECT_PROJECT,
            "projects",
            "project",
            "project",
            id,
            |p: &Project| p.org_id.clone()
        )
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
        let user = User {
            id: id.to_string(),
            org_id: org_id.to_string(),
            name: name.to_string(),
            email: email.map(str::to_string),
            created_at: now,
        };
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            sqlx::query(
                "INSERT INTO users (id, org_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(org_id)
            .bind(name)
            .bind(email)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_constraint(e, "id", format!("user {id:?} exists")))?;
            audit!(tx, Change::new("user", id, Some(org_id), NONE, Some(&user)));
            tx.commit().await?;
        });
        Ok(user)
    }

    /// One user.
    pub async fn get_user(&self, id: &str) -> Result<User, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, User>(sql!("{SELECT_USER} WHERE id = $1"))
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
        delete_audited!(
            self,
            User,
            SELECT_USER,
            "users",
            "user",
            "user",
            id,
            |u: &User| u.org_id.clone()
        )
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
                sqlx::query_scalar(sql!("SELECT 1 FROM {table} WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.is_some())
        })
    }
}
