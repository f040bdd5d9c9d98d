//! Extent pool administration: create, delete (only when empty), list. The space accounting
//! itself is [`crate::space`].

use crate::catalog::PoolRecord;
use crate::engine::Engine;
use crate::error::VolumeError;
use crate::relationship::now_ms;
use crate::space::{Pool, PoolInfo};
use crate::topology::Topology;
use crate::volume::valid_name;
use std::sync::Arc;

impl Engine {
    /// Creates an extent pool of `capacity` bytes.
    pub fn create_pool(&self, name: &str, capacity: u64) -> Result<PoolInfo, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        if capacity == 0 {
            return Err(VolumeError::EmptyPool);
        }
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        if inner.topology.read().pools.contains_key(name) {
            return Err(VolumeError::PoolExists(name.to_string()));
        }
        let mut change = inner.catalog.change_growing()?;
        let record = PoolRecord {
            id: change.next_id()?,
            name: name.to_string(),
            capacity,
            created_ms: now_ms(),
        };
        change.put_pool(&record)?;
        change.commit()?;
        let pool = Arc::new(Pool::new(
            record.id,
            record.name,
            capacity,
            record.created_ms,
        ));
        let mut topology = inner.topology.write();
        topology.pools.insert(name.to_string(), pool.clone());
        Ok(pool_info(&topology, &pool))
    }

    /// Deletes an empty extent pool.
    pub fn delete_pool(&self, name: &str) -> Result<(), VolumeError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let pool = self.find_pool(name)?;
        let users = pool_volumes(&inner.topology.read(), &pool);
        if users > 0 {
            return Err(VolumeError::PoolInUse(name.to_string(), users));
        }
        let holders: Vec<String> = inner
            .topology
            .read()
            .volumes()
            .filter(|v| v.safeguarded.lock().is_some_and(|s| s.pool == pool.id))
            .map(|v| v.name.clone())
            .collect();
        if !holders.is_empty() {
            return Err(VolumeError::PoolHoldsSafeguarded {
                pool: name.to_string(),
                volumes: holders.join(", "),
            });
        }
        let mut change = inner.catalog.change()?;
        change.delete_pool(pool.id)?;
        change.commit()?;
        inner.topology.write().pools.remove(name);
        Ok(())
    }

    pub(crate) fn find_pool(&self, name: &str) -> Result<Arc<Pool>, VolumeError> {
        self.inner
            .topology
            .read()
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::PoolNotFound(name.to_string()))
    }

    pub fn pools(&self) -> Vec<PoolInfo> {
        let topology = self.inner.topology.read();
        topology
            .pools
            .values()
            .map(|p| pool_info(&topology, p))
            .collect()
    }

    pub fn pool(&self, name: &str) -> Result<PoolInfo, VolumeError> {
        let pool = self.find_pool(name)?;
        Ok(pool_info(&self.inner.topology.read(), &pool))
    }
}

fn pool_volumes(topology: &Topology, pool: &Arc<Pool>) -> usize {
    topology
        .volumes()
        .filter(|v| v.pool.as_ref().is_some_and(|p| Arc::ptr_eq(p, pool)))
        .count()
}

fn pool_info(topology: &Topology, pool: &Arc<Pool>) -> PoolInfo {
    let used = pool.used().min(pool.capacity);
    PoolInfo {
        name: pool.name.clone(),
        capacity_bytes: pool.capacity,
        used_bytes: used,
        free_bytes: pool.capacity - used,
        volumes: pool_volumes(topology, pool),
        created_ms: pool.created_ms,
    }
}
