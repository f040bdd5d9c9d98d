//! The CLI's Safeguarded Copy calls.

use super::types::{
    Backup, ChangePolicy, CreatePolicy, Extent, Policy, Recover, Recovered, SafeguardedCap,
    SetRetention, SetSafeguarded, TakeBackups,
};
use crate::client::{segment, Client, ClientError};
use hyper::Method;

impl Client {
    pub async fn set_safeguarded(
        &self,
        volume: &str,
        req: &SetSafeguarded,
    ) -> Result<SafeguardedCap, ClientError> {
        let path = format!("/v1/volumes/{}/safeguarded", segment(volume));
        self.call(Method::PUT, &path, Some(req)).await
    }

    pub async fn take_backups(&self, req: &TakeBackups) -> Result<Vec<Backup>, ClientError> {
        self.call(Method::POST, "/v1/sgc/backups", Some(req)).await
    }

    pub async fn backups(&self) -> Result<Vec<Backup>, ClientError> {
        self.call(Method::GET, "/v1/sgc/backups", None::<&()>).await
    }

    pub async fn delete_backup(&self, id: u64) -> Result<(), ClientError> {
        self.checked(
            Method::DELETE,
            &format!("/v1/sgc/backups/{id}"),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    pub async fn set_retention(&self, id: u64, req: &SetRetention) -> Result<Backup, ClientError> {
        let path = format!("/v1/sgc/backups/{id}/retention");
        self.call(Method::PUT, &path, Some(req)).await
    }

    pub async fn recover_backup(&self, id: u64, req: &Recover) -> Result<Recovered, ClientError> {
        let path = format!("/v1/sgc/backups/{id}/recover");
        self.call(Method::POST, &path, Some(req)).await
    }

    pub async fn diff_backups(&self, a: u64, b: Option<u64>) -> Result<Vec<Extent>, ClientError> {
        let path = match b {
            Some(b) => format!("/v1/sgc/diff?from={a}&to={b}"),
            None => format!("/v1/sgc/diff?from={a}"),
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn policies(&self) -> Result<Vec<Policy>, ClientError> {
        self.call(Method::GET, "/v1/sgc/policies", None::<&()>)
            .await
    }

    pub async fn create_policy(&self, req: &CreatePolicy) -> Result<Policy, ClientError> {
        self.call(Method::POST, "/v1/sgc/policies", Some(req)).await
    }

    pub async fn change_policy(
        &self,
        name: &str,
        req: &ChangePolicy,
    ) -> Result<Policy, ClientError> {
        let path = format!("/v1/sgc/policies/{}", segment(name));
        self.call(Method::PATCH, &path, Some(req)).await
    }

    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/sgc/policies/{}", segment(name));
        self.checked(Method::DELETE, &path, None::<&()>)
            .await
            .map(|_| ())
    }
}
