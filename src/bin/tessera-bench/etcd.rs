//! The etcd side of `make bench-compare`: puts and linearizable gets through etcd's v3 KV gRPC
//! service (the subset in `proto::etcdserverpb`), so both systems are driven by the same load
//! generator.

use anyhow::Context as _;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

/// One HTTP/2 connection to an etcd member; clones share it.
#[derive(Clone)]
pub struct EtcdKv {
    client: KvClient<Channel>,
}

impl EtcdKv {
    /// Connects to the member serving clients at `addr` (`host:port`).
    pub async fn connect(addr: &str) -> anyhow::Result<EtcdKv> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {addr}"))?;
        Ok(EtcdKv {
            client: KvClient::new(channel),
        })
    }

    /// Puts `value` at `key`; etcd answers once the entry is committed and applied.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        self.client.put(req).await?;
        Ok(())
    }

    /// A linearizable read of `key` (etcd's default: `serializable` false, confirmed through
    /// the leader's read index).
    pub async fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let req = RangeRequest {
            key: key.to_vec(),
            serializable: false,
            ..Default::default()
        };
        let resp = self.client.range(req).await?.into_inner();
        Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
    }
}
