//! gRPC connections: `--conns` HTTP/2 channels spread over the endpoints, shared round-robin by
//! the `--clients` workers, as etcd's benchmark does. Each channel is one TCP connection that
//! multiplexes many concurrent requests.

use super::error::{BenchError, Result};
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::StatusRequest;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The connections of a run.
#[derive(Debug, Clone)]
pub struct Connections {
    /// One entry per `--conns`.
    channels: Vec<Channel>,
    /// The endpoints actually used (the leader alone under `--target-leader`).
    endpoints: Vec<String>,
}

/// Adds `http://` to a bare `host:port`, as etcd's tools accept both forms.
pub fn normalise_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect_one(endpoint: &str, dial_timeout: Duration) -> Result<Channel> {
    let ep =
        Endpoint::from_shared(endpoint.to_string()).map_err(|e| BenchError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    ep.connect_timeout(dial_timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| BenchError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })
}

/// Asks every endpoint for its status and returns the one whose member id is the leader id.
async fn find_leader(endpoints: &[String], dial_timeout: Duration) -> Result<String> {
    for ep in endpoints {
        let Ok(channel) = connect_one(ep, dial_timeout).await else {
            tracing::warn!(endpoint = %ep, "unreachable while looking for the leader");
            continue;
        };
        match MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
        {
            Ok(resp) => {
                let status = resp.into_inner();
                let member = status.header.map(|h| h.member_id).unwrap_or_default();
                if status.leader != 0 && status.leader == member {
                    return Ok(ep.clone());
                }
            }
            Err(e) => tracing::warn!(endpoint = %ep, error = %e, "status failed"),
        }
    }
    Err(BenchError::NoLeader(endpoints.len()))
}

impl Connections {
    /// Opens `conns` channels; channel i goes to endpoint i modulo the endpoint count.
    pub async fn open(
        endpoints: &[String],
        conns: usize,
        target_leader: bool,
        dial_timeout: Duration,
    ) -> Result<Connections> {
        if endpoints.is_empty() {
            return Err(BenchError::InvalidArgs("--endpoints is empty".into()));
        }
        if conns == 0 {
            return Err(BenchError::InvalidArgs("--conns must be at least 1".into()));
        }
        let mut endpoints: Vec<String> = endpoints.iter().map(|e| normalise_endpoint(e)).collect();
        if target_leader {
            endpoints = vec![find_leader(&endpoints, dial_timeout).await?];
        }
        let mut channels = Vec::with_capacity(conns);
        for i in 0..conns {
            let ep = &endpoints[i % endpoints.len()];
            channels.push(connect_one(ep, dial_timeout).await?);
        }
        Ok(Connections {
            channels,
            endpoints,
        })
    }

    /// The channel for worker (or stream) `i`: round-robin over the connections.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are no channels (never true for an opened set).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The endpoints in use.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_endpoints_get_a_scheme() {
        assert_eq!(
            normalise_endpoint("127.0.0.1:2379"),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalise_endpoint("http://h:1"), "http://h:1");
    }
}
