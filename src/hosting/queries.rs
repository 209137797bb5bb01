//! Reads for the admin API and UI: every list is a page.

use super::{HostError, Hosting};
use crate::ids::{ImageId, ImageKey, UserId};
use crate::repo::{Cursor, ImageRecord, Totals, UserTotal};

impl Hosting {
    pub async fn image_record(&self, key: &ImageKey) -> Result<Option<ImageRecord>, HostError> {
        Ok(self.repo.get(key).await?)
    }

    pub async fn user_images(
        &self,
        user: &UserId,
        after: Option<&ImageId>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, HostError> {
        Ok(self.repo.user_images(user, after, limit).await?)
    }

    pub async fn users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserTotal>, HostError> {
        Ok(self.repo.users(prefix, after, limit).await?)
    }

    pub async fn totals(&self) -> Result<Totals, HostError> {
        Ok(self.repo.totals().await?)
    }

    pub async fn top_users(&self, n: u32) -> Result<Vec<UserTotal>, HostError> {
        Ok(self.repo.top_users(n).await?)
    }

    pub async fn failed(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, HostError> {
        Ok(self.repo.failed(after, limit).await?)
    }
}
