//! TLS between clients and pgsplit, with a CA and certificates generated for each test:
//! tokio-postgres over rustls and psql verifying the CA and the host name (verify-full),
//! `client_mode` require and allow, PostgreSQL 17's direct TLS with and without ALPN, and
//! certificates swapped by a reload; SCRAM-SHA-256-PLUS with `channel_binding=require`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::TestProxy;
use pgsplit::config::{ClientTlsMode, Config, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SignatureAlgorithm,
};
use tokio_postgres::config::{ChannelBinding, SslMode, SslNegotiation};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A CA and a server certificate it signed (for `localhost` and 127.0.0.1), as PEM files in
/// a directory of their own.
struct Certs {
    dir: PathBuf,
    /// The CA's key type, which gives the server certificate's signature algorithm.
    ca_algorithm: &'static SignatureAlgorithm,
}

impl Certs {
    fn generate(name: &str) -> Certs {
        Certs::generate_with(name, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn generate_with(name: &str, ca_algorithm: &'static SignatureAlgorithm) -> Certs {
        let dir = std::env::temp_dir().join(common::unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Certs { dir, ca_algorithm };
        certs.issue("pgsplit test CA");
        certs
    }

    /// Writes a new CA (`ca.crt`) and a server certificate and key signed by it.
    fn issue(&self, ca_name: &str) {
        let ca_key = KeyPair::generate_for(self.ca_algorithm).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "pgsplit test server");
        let cert = server.signed_by(&key, &issuer).unwrap();
        std::fs::write(self.ca(), ca_cert.pem()).unwrap();
        std::fs::write(self.cert(), cert.pem()).unwrap();
        std::fs::write(self.key(), key.serialize_pem()).unwrap();
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    fn config(&self, mode: ClientTlsMode) -> TlsConfig {
        TlsConfig {
            cert_file: Some(self.cert()),
            key_file: Some(self.key()),
            client_mode: mode,
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_proxy(certs: &Certs, mode: ClientTlsMode) -> TestProxy {
    let tls = certs.config(mode);
    TestProxy::start(|c: &mut Config| c.tls = tls).await
}

/// A rustls client trusting only the CA in `ca` (rustls always checks the host name too).
fn client_config(ca: &Path, alpn: &[&[u8]]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// The admin console's login (database `pgsplit`, user `admin`).
fn admin_config(proxy: &TestProxy) -> tokio_postgres::Config {
    let mut admin = tokio_postgres::Config::new();
    admin
        .host("127.0.0.1")
        .port(proxy.port())
        .user("admin")
        .password(common::ADMIN_PASSWORD)
        .dbname("pgsplit");
    admin
}

/// Connects with TLS required, trusting only `ca`.
async fn connect_tls(
    pg: &mut tokio_postgres::Config,
    ca: &Path,
    alpn: &[&[u8]],
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    pg.ssl_mode(SslMode::Require);
    let tls = MakeRustlsConnect::new(client_config(ca, alpn));
    let (client, connection) = common::with_timeout(30, "TLS connect", pg.connect(tls)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with TLS required, trusting only `ca`; runs `SELECT 1`.
async fn select_one_over_tls(
    pg: &mut tokio_postgres::Config,
    ca: &Path,
    alpn: &[&[u8]],
) -> Result<i32, tokio_postgres::Error> {
    let client = connect_tls(pg, ca, alpn).await?;
    let row = client.query_one("SELECT 1", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_verifies_the_certificate_and_logs_in_over_tls() {
    let certs = Certs::generate("pgsplit_tls_tokio");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;

    // By IP address and by name: both are in the certificate.
    let mut pg = proxy.pg_config("tls_tokio");
    assert_eq!(
        select_one_over_tls(&mut pg, &certs.ca(), &[])
            .await
            .unwrap(),
        1
    );
    let mut pg = tokio_postgres::Config::new();
    pg.host("localhost")
        .port(proxy.port())
        .user("app")
        .password(common::APP_PASSWORD)
        .dbname("app");
    assert_eq!(
        select_one_over_tls(&mut pg, &certs.ca(), &[])
            .await
            .unwrap(),
        1
    );

    // A client trusting another CA refuses pgsplit's certificate.
    let other = Certs::generate("pgsplit_tls_other_ca");
    let e = select_one_over_tls(&mut pg, &other.ca(), &[])
        .await
        .expect_err("a certificate from an unknown CA is refused");
    assert!(
        common::describe(&e).contains("InvalidCertificate"),
        "{}",
        common::describe(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_client_without_tls_before_authentication() {
    let certs = Certs::generate("pgsplit_tls_require");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;
    let mut pg = proxy.pg_config("tls_require");
    pg.ssl_mode(SslMode::Disable).password("wrong password");
    let e = pg
        .connect(NoTls)
        .await
        .err()
        .expect("a client without TLS is refused");
    assert_eq!(common::sqlstate(&e), "28000", "{}", common::describe(&e));
    assert!(
        common::describe(&e).contains("SSL required"),
        "{}",
        common::describe(&e)
    );

    // A CancelRequest in clear (libpq before 17 sends them so) is still taken: the
    // connection closes without an answer, as PostgreSQL's does.
    let mut raw = common::raw::RawConn::connect(proxy.addr).await;
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    raw.write_raw(&cancel).await.unwrap();
    assert!(raw.recv_within(10).await.is_none(), "no error for a cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_serves_clients_with_and_without_tls() {
    let certs = Certs::generate("pgsplit_tls_allow");
    let proxy = tls_proxy(&certs, ClientTlsMode::Allow).await;
    let plain = proxy.connect("tls_allow_plain").await;
    let row = plain.query_one("SELECT 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let mut pg = proxy.pg_config("tls_allow_tls");
    assert_eq!(
        select_one_over_tls(&mut pg, &certs.ca(), &[])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_answers_sslrequest_with_n() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut raw = common::raw::RawConn::connect(proxy.addr).await;
    raw.write_raw(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(raw.recv_byte().await, Some(b'N'));
    // GSSENCRequest too, with TLS on.
    let certs = Certs::generate("pgsplit_tls_gss");
    let proxy = tls_proxy(&certs, ClientTlsMode::Allow).await;
    let mut raw = common::raw::RawConn::connect(proxy.addr).await;
    raw.write_raw(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    assert_eq!(raw.recv_byte().await, Some(b'N'));
    raw.write_raw(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(raw.recv_byte().await, Some(b'S'));
}

/// psql with `sslmode=verify-full` and `channel_binding=require` (SCRAM-SHA-256-PLUS,
/// libpq computing the certificate hash with OpenSSL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_verify_full_and_channel_binding() {
    let certs = Certs::generate("pgsplit_tls_psql");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;
    let conninfo = format!(
        "host=localhost port={} user=app dbname=app sslmode=verify-full sslrootcert={} channel_binding=require",
        proxy.port(),
        certs.ca().display()
    );
    let psql = |conninfo: String| {
        let mut cmd = common::pg_command("psql", proxy.port(), "app", common::APP_PASSWORD, "app");
        cmd.args(["-X", "-At", "-d", &conninfo, "-c", "SELECT 'tls ok'"]);
        cmd
    };
    let out = common::run_command(psql(conninfo.clone()), None, 60).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql failed: {stdout}{stderr}");
    assert_eq!(stdout.trim(), "tls ok");

    // verify-full checks the host name: a name the certificate does not carry fails.
    let wrong = conninfo.replace("host=localhost", "host=pgsplit.invalid hostaddr=127.0.0.1");
    let out = common::run_command(psql(wrong), None, 60).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong host name must fail");
    assert!(stderr.contains("does not match host name"), "{stderr}");
}

/// psycopg (Debian's python3-psycopg, over libpq) with `sslmode=verify-full` and
/// `channel_binding=require`: the connection succeeds only if pgsplit offers
/// SCRAM-SHA-256-PLUS and the binding checks out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_connects_with_verify_full_and_channel_binding() {
    let certs = Certs::generate("pgsplit_tls_psycopg");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;
    let conninfo = format!(
        "host=localhost port={} user=app password={} dbname=app sslmode=verify-full sslrootcert={} channel_binding=require",
        proxy.port(),
        common::APP_PASSWORD,
        certs.ca().display()
    );
    let script = "import sys, psycopg\n\
        with psycopg.connect(sys.argv[1]) as conn:\n    \
        print(conn.execute(\"select 'tls ok'\").fetchone()[0], conn.pgconn.ssl_in_use)\n";
    let mut cmd = tokio::process::Command::new("/usr/bin/python3");
    cmd.args(["-c", script, &conninfo]).kill_on_drop(true);
    let out = common::run_command(cmd, None, 60).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psycopg failed: {stdout}{stderr}");
    assert_eq!(stdout.trim(), "tls ok True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let certs = Certs::generate("pgsplit_tls_direct");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;
    let mut pg = proxy.pg_config("tls_direct");
    pg.ssl_negotiation(SslNegotiation::Direct);
    let postgresql: &[u8] = b"postgresql";
    assert_eq!(
        select_one_over_tls(&mut pg, &certs.ca(), &[postgresql])
            .await
            .unwrap(),
        1
    );

    // Other protocols only: the handshake fails.
    let e = select_one_over_tls(&mut pg, &certs.ca(), &[b"http/1.1"])
        .await
        .expect_err("direct TLS for another protocol is refused");
    assert!(
        common::describe(&e).contains("NoApplicationProtocol"),
        "{}",
        common::describe(&e)
    );

    // No ALPN at all: the handshake completes, then pgsplit refuses with 08P01.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&certs.ca(), &[])));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let e = proxy
        .pg_config("tls_direct_no_alpn")
        .ssl_mode(SslMode::Disable)
        .connect_raw(tls, NoTls)
        .await
        .err()
        .expect("direct TLS without ALPN is refused");
    assert_eq!(common::sqlstate(&e), "08P01", "{}", common::describe(&e));
}

/// A reload reads the certificate files again: new connections get the new certificate;
/// files that cannot be used refuse the reload and the old certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_and_keeps_the_old_one_on_error() {
    let certs = Certs::generate("pgsplit_tls_reload");
    let file = certs.dir.join("config.toml");
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let mut value: toml::Table = text.parse().unwrap();
    value.insert(
        "tls".into(),
        toml::Value::try_from(certs.config(ClientTlsMode::Require)).unwrap(),
    );
    std::fs::write(&file, toml::to_string(&value).unwrap()).unwrap();
    let mut config = common::test_config();
    config.tls = certs.config(ClientTlsMode::Require);
    let proxy = TestProxy::start_with(config, Some(file)).await;
    let mut pg = proxy.pg_config("tls_reload");
    let first_ca = certs.dir.join("first-ca.crt");
    std::fs::copy(certs.ca(), &first_ca).unwrap();
    assert_eq!(
        select_one_over_tls(&mut pg, &first_ca, &[]).await.unwrap(),
        1
    );

    certs.issue("pgsplit second test CA");
    proxy.proxy.reload_file().expect("the reload succeeds");
    assert_eq!(
        select_one_over_tls(&mut pg, &certs.ca(), &[])
            .await
            .unwrap(),
        1
    );
    select_one_over_tls(&mut pg, &first_ca, &[])
        .await
        .expect_err("the old certificate is gone");

    // A broken certificate: the admin console's RELOAD (over TLS) is refused with the
    // reason, and the second certificate stays.
    let console = connect_tls(&mut admin_config(&proxy), &certs.ca(), &[])
        .await
        .unwrap();
    std::fs::write(certs.cert(), "not a certificate").unwrap();
    let e = console
        .simple_query("RELOAD")
        .await
        .expect_err("a broken certificate is refused");
    assert_eq!(common::sqlstate(&e), "F0000");
    assert!(
        common::describe(&e).contains("tls.cert_file"),
        "{}",
        common::describe(&e)
    );
    assert_eq!(
        select_one_over_tls(&mut pg, &certs.ca(), &[])
            .await
            .unwrap(),
        1
    );
}

/// tokio-postgres requiring channel binding, against certificates signed with SHA-256 and
/// with SHA-384 (the end-point hash follows the signature); a plain client is offered
/// SCRAM-SHA-256 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_is_offered_to_tls_clients_only() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let certs = Certs::generate_with("pgsplit_tls_binding", alg);
        let proxy = tls_proxy(&certs, ClientTlsMode::Allow).await;
        let mut pg = proxy.pg_config("tls_binding");
        pg.channel_binding(ChannelBinding::Require);
        assert_eq!(
            select_one_over_tls(&mut pg, &certs.ca(), &[])
                .await
                .unwrap(),
            1
        );

        let mut raw = common::raw::RawConn::connect(proxy.addr).await;
        raw.send_startup(&[("user", "app"), ("database", "app")])
            .await;
        let auth = raw.recv().await.expect("an authentication request");
        assert_eq!(auth.tag, b'R');
        assert_eq!(&auth.body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
        assert_eq!(&auth.body[4..], b"SCRAM-SHA-256\0\0");
    }
}

/// Large messages both ways and pipelined queries over TLS (every write to a TLS client
/// must be flushed, or replies stay in rustls' buffer), and the admin console over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_pipelines_and_the_admin_console_work_over_tls() {
    let certs = Certs::generate("pgsplit_tls_large");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;
    let client = connect_tls(&mut proxy.pg_config("tls_large"), &certs.ca(), &[])
        .await
        .unwrap();
    let row = client
        .query_one("SELECT repeat('x', 20000000)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0).len(), 20_000_000);
    let big = "y".repeat(8_000_000);
    let row = client
        .query_one("SELECT length($1::text)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 8_000_000);
    let queries = (0..50).map(|i| {
        let client = &client;
        async move {
            let row = client.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
            row.get::<_, i32>(0)
        }
    });
    let answers = futures_util::future::join_all(queries).await;
    assert_eq!(answers, (1..=50).collect::<Vec<i32>>());

    let console = connect_tls(&mut admin_config(&proxy), &certs.ca(), &[])
        .await
        .unwrap();
    let clients = common::admin_rows(&console, "SHOW CLIENTS").await;
    assert!(
        clients
            .iter()
            .any(|row| row.iter().any(|(_, v)| v.as_deref() == Some("app"))),
        "{clients:?}"
    );
}

/// A CancelRequest sent over TLS (SSLRequest first, as tokio-postgres and libpq 17 do)
/// stops a TLS client's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_over_tls_stops_a_query() {
    let certs = Certs::generate("pgsplit_tls_cancel");
    let proxy = tls_proxy(&certs, ClientTlsMode::Require).await;
    let checker = common::superuser().await;
    let app = common::unique("tls_cancel");
    let client = connect_tls(&mut proxy.pg_config(&app), &certs.ca(), &[])
        .await
        .unwrap();
    let token = client.cancel_token();
    let query =
        tokio::spawn(async move { client.simple_query("select pg_sleep(20)").await.map(|_| ()) });
    common::wait_until(20, "the query runs", || async {
        common::backends(&checker, &app)
            .await
            .iter()
            .any(|(state, query)| state == "active" && query.contains("pg_sleep"))
    })
    .await;
    let tls = MakeRustlsConnect::new(client_config(&certs.ca(), &[]));
    token.cancel_query(tls).await.unwrap();
    let e = common::with_timeout(10, "the cancelled query", query)
        .await
        .unwrap()
        .expect_err("the query was cancelled");
    assert_eq!(common::sqlstate(&e), "57014", "{}", common::describe(&e));
}
