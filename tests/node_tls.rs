//! TLS from pgsplit to the nodes (`[[nodes]] tls`, `tls_ca_file`, `allow_cleartext_password`).
//!
//! Against the dev cluster, whose nodes speak TLS with a certificate from the cluster's CA
//! (dev/cluster.sh): verify-full to every node serves reads and writes over TLS (the server
//! says so in pg_stat_ssl), the monitor's control connections work (replicas healthy), and
//! cancel requests get through; require works without a CA; verify-full with another CA
//! fails with a clear error; an unreadable CA file stops the start.
//!
//! Against stand-in nodes in the test (a CA and certificates made with the openssl CLI):
//! each mode's checks (name, chain, none), an `N` answer, and a node asking for the password
//! in clear text, refused by server and control connections unless TLS or the setting
//! allows it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{describe, node_port, show, unique, wait_until, TestProxy};
use pgsplit::backend::connection::Credentials;
use pgsplit::backend::{BackendError, NodeAddr, ServerConn};
use pgsplit::config::{Config, NodeConfig, NodeTlsMode};
use pgsplit::control::{self, ControlLogin};
use pgsplit::lag::HealthState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

// ---- the dev cluster ----

/// The CA of the cluster's certificates: `PGSPLIT_CLUSTER_CA` (dev/test.sh exports it),
/// else `tls/ca.crt` in the cluster directory.
fn cluster_ca() -> PathBuf {
    let path = std::env::var_os("PGSPLIT_CLUSTER_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir = std::env::var_os("PGSPLIT_CLUSTER_DIR")
                .unwrap_or_else(|| "/tmp/pgsplit-cluster".into());
            Path::new(&dir).join("tls/ca.crt")
        });
    assert!(
        path.exists(),
        "{} is missing: the dev cluster has no TLS yet (run dev/cluster.sh up, or dev/cluster.sh tls-on)",
        path.display()
    );
    path
}

/// Every node of `config` on `mode`, checked against `ca` when given.
fn all_nodes(config: &mut Config, mode: NodeTlsMode, ca: Option<&Path>) {
    for node in &mut config.nodes {
        node.tls = mode;
        node.tls_ca_file = ca.map(Path::to_owned);
    }
}

/// Whether the server running `client`'s statement sees TLS on its connection.
async fn server_sees_tls(client: &tokio_postgres::Client) -> String {
    show(
        client,
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_to_every_node_serves_reads_and_writes_over_tls() {
    let ca = cluster_ca();
    let proxy = TestProxy::start(|config| {
        config.routing.enabled = true;
        all_nodes(config, NodeTlsMode::VerifyFull, Some(&ca));
    })
    .await;
    // The monitor's control connections reach both replicas over TLS.
    let routing = proxy.proxy.routing().clone();
    wait_until(10, "both replicas healthy", || {
        let healthy = routing
            .topology
            .snapshot()
            .iter()
            .filter(|r| r.state == HealthState::Healthy)
            .count();
        async move { healthy == 2 }
    })
    .await;

    let client = proxy.connect(&unique("node_tls_full")).await;
    let table = unique("node_tls");
    client
        .batch_execute(&format!("create table {table} (id int)"))
        .await
        .unwrap();
    // A write and a read inside one transaction: the primary, over TLS.
    client
        .batch_execute(&format!("begin; insert into {table} values (1)"))
        .await
        .unwrap();
    assert_eq!(server_sees_tls(&client).await, "t");
    assert_eq!(
        show(&client, "select inet_server_port()").await,
        node_port("primary").to_string()
    );
    client.batch_execute("commit").await.unwrap();
    // Reads on the replicas, over TLS, and the write is there (read-your-writes).
    let replicas = [node_port("replica1"), node_port("replica2")];
    for _ in 0..4 {
        let reader = proxy.connect(&unique("node_tls_read")).await;
        assert_eq!(server_sees_tls(&reader).await, "t");
        let port: u16 = show(&reader, "select inet_server_port()")
            .await
            .parse()
            .unwrap();
        assert!(replicas.contains(&port), "a read ran on port {port}");
    }
    assert_eq!(
        show(&client, &format!("select count(*) from {table}")).await,
        "1"
    );
    client
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_a_ca() {
    let proxy = TestProxy::start(|config| all_nodes(config, NodeTlsMode::Require, None)).await;
    let client = proxy.connect(&unique("node_tls_require")).await;
    assert_eq!(server_sees_tls(&client).await, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_uses_tls_when_the_node_offers_it_and_disable_does_not() {
    for (mode, expected) in [(NodeTlsMode::Prefer, "t"), (NodeTlsMode::Disable, "f")] {
        let proxy = TestProxy::start(|config| all_nodes(config, mode, None)).await;
        let client = proxy.connect(&unique("node_tls_prefer")).await;
        assert_eq!(server_sees_tls(&client).await, expected, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_a_node_over_tls() {
    let ca = cluster_ca();
    let proxy =
        TestProxy::start(|config| all_nodes(config, NodeTlsMode::VerifyFull, Some(&ca))).await;
    let client = proxy.connect(&unique("node_tls_cancel")).await;
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(client.simple_query("select pg_sleep(20)"), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let err = result.expect_err("the sleep was cancelled");
    assert_eq!(common::sqlstate(&err), "57014", "{}", describe(&err));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Messages far larger than a TLS record or a socket buffer, both ways: the writes to the
/// node are flushed out of the TLS session, the replies stream back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_pass_over_tls() {
    let ca = cluster_ca();
    let proxy = TestProxy::start(|config| {
        all_nodes(config, NodeTlsMode::VerifyFull, Some(&ca));
        config.pool.max_size = 1;
    })
    .await;
    let client = proxy.connect(&unique("node_tls_large")).await;
    let big = "x".repeat(16 << 20);
    for _ in 0..2 {
        let row = client
            .query_one("select length($1::text), md5($1::text)", &[&big])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 16 << 20);
        let echoed = client
            .query_one("select repeat('y', $1)", &[&(16i32 << 20)])
            .await
            .unwrap();
        assert_eq!(echoed.get::<_, &str>(0).len(), 16 << 20);
    }
    assert_eq!(server_sees_tls(&client).await, "t");
}

/// A pooled TLS connection whose backend is terminated while it sits in the pool is
/// replaced without the client seeing an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_tls_connection_killed_while_idle_is_replaced() {
    let proxy = TestProxy::start(|config| {
        all_nodes(config, NodeTlsMode::Require, None);
        config.pool.max_size = 1;
    })
    .await;
    let checker = common::superuser().await;
    let client = proxy.connect(&unique("node_tls_killed")).await;
    for wait_after in [Duration::ZERO, Duration::from_millis(1500)] {
        let pid: i32 = client
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(checker
            .query_one("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get::<_, bool>(0));
        wait_until(10, "the terminated backend to be gone", || {
            let checker = &checker;
            async move {
                checker
                    .query("select 1 from pg_stat_activity where pid = $1", &[&pid])
                    .await
                    .unwrap()
                    .is_empty()
            }
        })
        .await;
        tokio::time::sleep(wait_after).await;
        let new_pid: i32 = client
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the dead pooled connection was handed out: {}",
                    describe(&e)
                )
            })
            .get(0);
        assert_ne!(new_pid, pid);
    }
    assert_eq!(server_sees_tls(&client).await, "t");
}

/// The check before a pooled connection is reused reads through the TLS session: quiet
/// while the server is idle (after a query too), not once the server has ended the
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quiet_check_sees_a_tls_session_end() {
    let ca = cluster_ca();
    let mut config = common::test_config().nodes[0].clone();
    config.tls = NodeTlsMode::VerifyFull;
    config.tls_ca_file = Some(ca);
    let node = Arc::new(NodeAddr::from_config(&config).unwrap());
    let mut conn = ServerConn::connect(node, &credentials(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(conn.stream.is_tls());
    assert!(conn.is_quiet());
    conn.execute("select 1").await.unwrap();
    assert!(conn.is_quiet(), "quiet after a query");
    let checker = common::superuser().await;
    let pid = conn.backend_pid;
    assert!(checker
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get::<_, bool>(0));
    let mut quiet = true;
    for _ in 0..100 {
        quiet = conn.is_quiet();
        if !quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!quiet, "the terminated session still looks quiet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_another_ca_fails_with_a_clear_error() {
    let dir = TempDir::new("node_tls_wrong_ca");
    let (other_ca, _) = make_ca(&dir.0, "other");
    let proxy = TestProxy::start(|config| {
        all_nodes(config, NodeTlsMode::VerifyFull, Some(&other_ca));
        config.proxy.server_connect_timeout = pgsplit::config::Duration::from_secs(5);
        config.routing.enabled = true;
    })
    .await;
    let err = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app password=secret dbname=app",
            proxy.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .map(|_| ())
    .expect_err("no node can be trusted");
    let text = describe(&err);
    assert!(
        text.contains("node primary") && text.contains("invalid peer certificate"),
        "{text}"
    );
    // The monitor does not trust the replicas either: none joins the read rotation.
    let replicas = proxy.proxy.routing().topology.snapshot();
    assert!(
        replicas.iter().all(|r| r.state != HealthState::Healthy),
        "{replicas:?}"
    );
}

#[tokio::test]
async fn an_unreadable_ca_file_stops_the_start() {
    let mut config = common::test_config();
    config.nodes[1].tls = NodeTlsMode::VerifyFull;
    config.nodes[1].tls_ca_file = Some("/nonexistent/pgsplit-ca.crt".into());
    let err = pgsplit::server::Listener::bind(config, None)
        .await
        .map(|_| ())
        .expect_err("the CA file is missing");
    let text = err.to_string();
    assert!(
        text.contains("node replica1: cannot read tls_ca_file /nonexistent/pgsplit-ca.crt"),
        "{text}"
    );
    // A file that holds no certificate.
    let dir = TempDir::new("node_tls_empty_ca");
    let empty = dir.0.join("empty.crt");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let mut config = common::test_config();
    config.nodes[0].tls = NodeTlsMode::VerifyCa;
    config.nodes[0].tls_ca_file = Some(empty.clone());
    let err = pgsplit::server::Listener::bind(config, None)
        .await
        .map(|_| ())
        .expect_err("the CA file is empty");
    assert!(
        err.to_string().contains("holds no usable CA certificate"),
        "{err}"
    );
}

// ---- stand-in nodes ----

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir`: (certificate, key).
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// A server certificate for `san` (e.g. `DNS:localhost,IP:127.0.0.1`) signed by `ca`:
/// (certificate, key).
fn make_cert(dir: &Path, name: &str, ca: &(PathBuf, PathBuf), san: &str) -> (PathBuf, PathBuf) {
    let path = |ext: &str| dir.join(format!("{name}.{ext}"));
    let (cert, key, csr, conf) = (path("crt"), path("key"), path("csr"), path("ext"));
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    std::fs::write(
        &conf,
        format!(
            "subjectAltName = {san}\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.0.to_str().unwrap(),
        "-CAkey",
        ca.1.to_str().unwrap(),
        "-set_serial",
        "1",
        "-days",
        "2",
        "-extfile",
        conf.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

fn acceptor(cert: &(PathBuf, PathBuf)) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(&cert.0)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&cert.1).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// What a stand-in node does after the SSLRequest exchange.
#[derive(Clone, Copy)]
enum Then {
    /// Writes `hello`.
    Greet,
    /// Reads the startup packet, asks for the password in clear text and reports what
    /// comes back (a PasswordMessage's password, or nothing).
    AskCleartext,
}

/// A stand-in node on a free port, for one connection: answers an SSLRequest with `S`
/// (then a TLS handshake with `cert`) when it has one, with `N` when it has none; then does
/// `then`. Reports what the client sent as its password, for `Then::AskCleartext`.
async fn stand_in(
    cert: Option<(PathBuf, PathBuf)>,
    ssl_request: bool,
    then: Then,
) -> (u16, oneshot::Receiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        if ssl_request {
            let mut request = [0u8; 8];
            tcp.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "an SSLRequest");
            match &cert {
                Some(cert) => {
                    tcp.write_all(b"S").await.unwrap();
                    // A failed handshake is the client's business.
                    if let Ok(tls) = acceptor(cert).accept(tcp).await {
                        let _ = tx.send(act(tls, then).await);
                    }
                    return;
                }
                None => tcp.write_all(b"N").await.unwrap(),
            }
        }
        let _ = tx.send(act(tcp, then).await);
    });
    (port, rx)
}

async fn act<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, then: Then) -> Option<String> {
    match then {
        Then::Greet => {
            s.write_all(b"hello").await.ok()?;
            s.flush().await.ok()?;
            // Hold the link until the client has read.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_u8()).await;
            None
        }
        Then::AskCleartext => {
            let len = s.read_u32().await.ok()? as usize;
            let mut startup = vec![0u8; len.checked_sub(4)?];
            s.read_exact(&mut startup).await.ok()?;
            s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await.ok()?;
            s.flush().await.ok()?;
            let reply = tokio::time::timeout(Duration::from_secs(3), async {
                let tag = s.read_u8().await.ok()?;
                let len = s.read_u32().await.ok()? as usize;
                let mut body = vec![0u8; len.checked_sub(4)?];
                s.read_exact(&mut body).await.ok()?;
                (tag == b'p').then(|| {
                    String::from_utf8_lossy(&body)
                        .trim_end_matches('\0')
                        .to_owned()
                })
            })
            .await;
            reply.ok().flatten()
        }
    }
}

/// A node at 127.0.0.1:`port` with these TLS settings.
fn node(port: u16, mode: NodeTlsMode, ca: Option<&Path>, allow_cleartext: bool) -> NodeAddr {
    let mut config: NodeConfig = common::test_config().nodes[0].clone();
    config.name = "standin".into();
    config.host = "127.0.0.1".into();
    config.port = port;
    config.tls = mode;
    config.tls_ca_file = ca.map(Path::to_owned);
    config.allow_cleartext_password = allow_cleartext;
    NodeAddr::from_config(&config).expect("TLS settings")
}

/// Opens a link as `mode` to a stand-in with `cert` (or answering `N` without one):
/// Ok(whether it is TLS) once the greeting came through, or the error's text.
async fn open_link(
    mode: NodeTlsMode,
    ca: Option<&Path>,
    cert: Option<(PathBuf, PathBuf)>,
) -> Result<bool, String> {
    let (port, _) = stand_in(cert, true, Then::Greet).await;
    let node = node(port, mode, ca, false);
    let mut link = node.open().await.map_err(|e| e.to_string())?;
    let mut hello = [0u8; 5];
    link.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    Ok(link.is_tls())
}

#[tokio::test]
async fn each_mode_checks_what_libpq_checks() {
    let dir = TempDir::new("node_tls_modes");
    let ca = make_ca(&dir.0, "ca");
    let other_ca = make_ca(&dir.0, "other-ca");
    let good = make_cert(&dir.0, "good", &ca, "DNS:localhost,IP:127.0.0.1");
    let misnamed = make_cert(&dir.0, "misnamed", &ca, "DNS:db.example");
    let (ca, other_ca) = (Some(ca.0.as_path()), Some(other_ca.0.as_path()));
    use NodeTlsMode::*;

    assert_eq!(
        open_link(VerifyFull, ca, Some(good.clone())).await,
        Ok(true)
    );
    let err = open_link(VerifyFull, ca, Some(misnamed.clone()))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("could not set up TLS with node standin (127.0.0.1:")
            && err.contains(
                "TLS handshake failed: invalid peer certificate: certificate not valid for name"
            ),
        "{err}"
    );
    let err = open_link(VerifyFull, other_ca, Some(good.clone()))
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    // verify-ca: the chain, not the name.
    assert_eq!(
        open_link(VerifyCa, ca, Some(misnamed.clone())).await,
        Ok(true)
    );
    let err = open_link(VerifyCa, other_ca, Some(misnamed.clone()))
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // require and prefer: encryption, no checks.
    assert_eq!(
        open_link(Require, None, Some(misnamed.clone())).await,
        Ok(true)
    );
    assert_eq!(open_link(Prefer, None, Some(misnamed)).await, Ok(true));

    // A node that answers N: plain for prefer only.
    assert_eq!(open_link(Prefer, None, None).await, Ok(false));
    for (mode, ca) in [(Require, None), (VerifyCa, ca), (VerifyFull, ca)] {
        let err = open_link(mode, ca, None).await.unwrap_err();
        assert!(
            err.contains(&format!(
                "the node does not accept TLS (it answered the SSLRequest with N) and its tls setting is {:?}",
                mode.as_str()
            )),
            "{err}"
        );
    }
}

fn credentials() -> Credentials {
    Credentials {
        user: "app".into(),
        password: Some("secret".into()),
        database: "app".into(),
    }
}

/// Logs in to a stand-in that asks for the password in clear text with a server
/// connection: the error, and the password the stand-in got.
async fn server_login(
    mode: NodeTlsMode,
    cert: Option<(PathBuf, PathBuf)>,
    allow: bool,
) -> (BackendError, Option<String>) {
    let (port, got) = stand_in(cert, mode != NodeTlsMode::Disable, Then::AskCleartext).await;
    let node = Arc::new(node(port, mode, None, allow));
    let err = match ServerConn::connect(node, &credentials(), Duration::from_secs(5), 10).await {
        Ok(_) => panic!("the stand-in never lets anyone in"),
        Err(e) => e,
    };
    (err, got.await.unwrap_or(None))
}

#[tokio::test]
async fn server_connections_send_a_cleartext_password_only_over_tls_or_when_allowed() {
    let (err, got) = server_login(NodeTlsMode::Disable, None, false).await;
    assert!(matches!(err, BackendError::CleartextRefused(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "node standin asks for the password in clear text over a link without TLS; pgsplit refuses to send it (set the node's tls, or allow_cleartext_password = true)"
    );
    assert_eq!(err.sqlstate(), "08004");
    assert_eq!(got, None, "the password never left");

    let (_, got) = server_login(NodeTlsMode::Disable, None, true).await;
    assert_eq!(got.as_deref(), Some("secret"), "allowed by the setting");

    // Over TLS (even unverified) the password goes.
    let dir = TempDir::new("node_tls_cleartext");
    let ca = make_ca(&dir.0, "ca");
    let cert = make_cert(&dir.0, "node", &ca, "IP:127.0.0.1");
    let (_, got) = server_login(NodeTlsMode::Require, Some(cert), false).await;
    assert_eq!(got.as_deref(), Some("secret"), "sent over TLS");
}

#[tokio::test]
async fn control_connections_refuse_a_cleartext_request_too() {
    for allow in [false, true] {
        let (port, got) = stand_in(None, false, Then::AskCleartext).await;
        let node = node(port, NodeTlsMode::Disable, None, allow);
        let login = ControlLogin {
            user: "app".into(),
            password: Some("secret".into()),
            database: "app".into(),
            connect_timeout: Duration::from_secs(5),
        };
        let pool = control::pool(&node, &login, "node_tls test", 1).unwrap();
        let err = control::query(&pool, "select 1", Duration::from_secs(5))
            .await
            .expect_err("the stand-in never lets anyone in");
        let got = got.await.unwrap_or(None);
        if allow {
            assert_eq!(got.as_deref(), Some("secret"), "allowed by the setting");
        } else {
            assert_eq!(got, None, "the password never left");
            assert!(
                err.to_string().contains(
                    "node standin asks for the password in clear text over a link without TLS"
                ),
                "{err}"
            );
        }
    }
}
