//! TLS on a cluster of real processes: the scheduler's port, every store's client and peer
//! ports speak TLS only, all of them mutual TLS (`client_cert_auth`), the peer port with an
//! allowed common name; clients with the CA and a certificate work (the ctl, the cluster client,
//! the stores' own gateways); clients without the CA, with another CA, or with the CA but no
//! certificate, are refused, and so is a peer without a client certificate or with a name not
//! allowed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use proto::raft_serverpb::BatchRaftMessage;
use proto::tinykvpb::raft_peer_client::RaftPeerClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tokio::task::block_in_place;

use crate::procs::{Cluster, STORE_CONFIG};
use crate::util::ctl;

/// A certificate authority that signs certificates for 127.0.0.1 and localhost.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes the CA as `dir/NAME-ca.pem`; returns its path.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }

    /// Signs a certificate with common name `cn`; writes it and its key as `dir/CN.pem` and
    /// `dir/CN-key.pem`.
    fn issue(&self, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{cn}.pem")),
            dir.join(format!("{cn}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn security(ca: &Path, cert: &Path, key: &Path, allowed: &str) -> String {
    format!(
        "\n[security]\nca_path = {:?}\ncert_path = {:?}\nkey_path = {:?}\n{allowed}",
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// GET `path` at `addr` over HTTPS, the server's certificate checked against `tls`'s CA.
async fn https_get(addr: std::net::SocketAddr, path: &str, tls: &security::Tls) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(tls.https_client().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

/// A peer-port client over TLS with `ca`, presenting `identity` (cert, key) if given.
async fn peer_client(
    addr: &str,
    ca: &Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<RaftPeerClient<tonic::transport::Channel>, String> {
    let paths = security::TlsPaths {
        ca_path: Some(ca.to_path_buf()),
        cert_path: identity.map(|i| i.0.clone()),
        key_path: identity.map(|i| i.1.clone()),
        client_cert_auth: false,
    };
    let tls = paths.load().unwrap().unwrap();
    let channel = security::endpoint(addr, Some(&tls))
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(RaftPeerClient::new(channel))
}

/// An empty `BatchRaft` stream with `token`: what the peer port makes of the caller.
async fn knock(
    client: Result<RaftPeerClient<tonic::transport::Channel>, String>,
    token: &str,
) -> Result<(), String> {
    let mut client = client?;
    let mut req = tonic::Request::new(tokio_stream::iter(Vec::<BatchRaftMessage>::new()));
    req.metadata_mut()
        .insert("x-tessera-cluster-token", token.parse().unwrap());
    client
        .batch_raft(req)
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_every_port_and_who_is_refused_2b() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new("tessera-test-ca");
    let ca_path = ca.write(dir, "cluster");
    let store = ca.issue(dir, "tessera-store");
    let client_id = ca.issue(dir, "tessera-client");
    let mallory = ca.issue(dir, "mallory");
    let foreign = Ca::new("someone-else");
    let foreign_path = foreign.write(dir, "foreign");

    let store_config = format!(
        "{STORE_CONFIG}{}",
        security(
            &ca_path,
            &store.0,
            &store.1,
            "cert_allowed_cn = [\"tessera-store\"]\nclient_cert_auth = true\n"
        )
    );
    let sched_config = security(&ca_path, &store.0, &store.1, "client_cert_auth = true\n");
    let mut cluster =
        block_in_place(|| Cluster::start_scheduler_with(&store_config, &sched_config));
    for _ in 0..3 {
        block_in_place(|| cluster.add_store());
    }

    // The ctl with the CA and a client certificate, through the whole cluster.
    let sched = cluster.scheduler.clone();
    let tls_args = [
        "--ca-path",
        ca_path.to_str().unwrap(),
        "--cert-path",
        client_id.0.to_str().unwrap(),
        "--key-path",
        client_id.1.to_str().unwrap(),
    ];
    let with_tls = |args: &[&str]| {
        let mut all: Vec<&str> = tls_args.to_vec();
        all.extend_from_slice(args);
        ctl(&all)
    };
    let put = block_in_place(|| with_tls(&["--scheduler", &sched, "put", "k", "v"]));
    assert_eq!(put.0, 0, "{put:?}");
    let get = block_in_place(|| with_tls(&["--scheduler", &sched, "get", "k"]));
    assert_eq!(get, (0, "v\n".to_string(), String::new()));
    let store_addr = cluster.stores[0].grpc_addr().to_string();
    let direct = block_in_place(|| with_tls(&["--addr", &store_addr, "get", "k"]));
    assert!(direct.0 == 0 || direct.0 == 3, "{direct:?}");

    // The library, with the CA and a client certificate.
    let paths = security::TlsPaths {
        ca_path: Some(ca_path.clone()),
        cert_path: Some(client_id.0.clone()),
        key_path: Some(client_id.1.clone()),
        client_cert_auth: false,
    };
    let config = ClusterConfig {
        tls: paths.load().unwrap(),
        ..ClusterConfig::default()
    };
    let client = ClusterClient::connect(&sched, config).await.unwrap();
    client.put("default", b"lib", b"1").await.unwrap();
    assert_eq!(
        client.get("default", b"k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );

    // Each store's gateway speaks HTTPS, and reaches the cluster over TLS; plain HTTP to it
    // gets no answer.
    let tls = paths.load().unwrap().unwrap();
    for s in &cluster.stores {
        let (code, body) = https_get(s.http, "/kv/k", &tls).await;
        assert_eq!((code, body.as_str()), (200, "v"), "{}", s.name);
    }
    let plain = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(cluster.stores[0].http)
            .await
            .unwrap();
        tcp.write_all(b"GET /kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            tcp.read_to_end(&mut raw),
        );
        let _ = read.await;
        String::from_utf8_lossy(&raw).to_string()
    };
    assert!(
        !plain.starts_with("HTTP/"),
        "plain HTTP answered on an HTTPS port: {plain}"
    );
    // The ctl's status commands and the scheduler's status port, over HTTPS.
    let endpoints: Vec<String> = cluster.stores.iter().map(|s| s.http.to_string()).collect();
    let health =
        block_in_place(|| with_tls(&["endpoint", "health", "--endpoints", &endpoints.join(",")]));
    assert_eq!(health.0, 0, "{health:?}");
    assert_eq!(health.1.matches("is healthy").count(), 3, "{health:?}");
    let status =
        block_in_place(|| with_tls(&["--scheduler", &sched, "endpoint", "status", "--cluster"]));
    assert_eq!(status.0, 0, "{status:?}");
    let sched_status: std::net::SocketAddr = cluster.scheduler_status.parse().unwrap();
    let (code, body) = https_get(sched_status, "/stores", &tls).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"status_address\"") || body.contains("\"address\""),
        "{body}"
    );

    // Refused: no CA (plain TCP to a TLS port), another CA, a wrong CA file.
    let out = block_in_place(|| {
        vec![
            ctl(&["--addr", &store_addr, "get", "k"]),
            ctl(&[
                "--ca-path",
                foreign_path.to_str().unwrap(),
                "--addr",
                &store_addr,
                "get",
                "k",
            ]),
            ctl(&["--scheduler", &sched, "get", "k"]),
            ctl(&[
                "--ca-path",
                store.1.to_str().unwrap(),
                "--addr",
                &store_addr,
                "get",
                "k",
            ]),
            ctl(&[
                "--ca-path",
                ca_path.to_str().unwrap(),
                "--addr",
                &store_addr,
                "get",
                "k",
            ]),
            ctl(&[
                "--ca-path",
                ca_path.to_str().unwrap(),
                "--scheduler",
                &sched,
                "get",
                "k",
            ]),
        ]
    });
    assert_eq!(out[0].0, 4, "{:?}", out[0]);
    assert_eq!(out[1].0, 4, "{:?}", out[1]);
    assert!(out[1].2.contains("certificate"), "{:?}", out[1]);
    assert_eq!(out[2].0, 4, "{:?}", out[2]);
    assert_eq!(out[3].0, 2, "{:?}", out[3]);
    assert!(
        out[3].2.contains("holds no PEM certificate"),
        "{:?}",
        out[3]
    );
    // client_cert_auth: the CA alone is not enough, at a store or at the scheduler.
    assert_eq!(out[4].0, 4, "{:?}", out[4]);
    assert_eq!(out[5].0, 4, "{:?}", out[5]);

    // The peer port: a store's certificate passes; none, or a name not allowed, does not.
    let peer = cluster.stores[1].peer.clone();
    let token = cluster.stores[1].token.clone();
    let ok = knock(peer_client(&peer, &ca_path, Some(&store)).await, &token).await;
    assert!(ok.is_ok(), "{ok:?}");
    let anonymous = knock(peer_client(&peer, &ca_path, None).await, &token).await;
    assert!(
        anonymous.is_err(),
        "a peer without a certificate was let in"
    );
    let named = knock(peer_client(&peer, &ca_path, Some(&mallory)).await, &token).await;
    let named = named.unwrap_err();
    assert!(
        named.starts_with("PermissionDenied") && named.contains("mallory"),
        "{named}"
    );
    let client_named = knock(peer_client(&peer, &ca_path, Some(&client_id)).await, &token).await;
    assert!(client_named.unwrap_err().starts_with("PermissionDenied"));
}
