//! The peer transport over real TLS on loopback.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flotilla_proto::trust::Role;
use flotilla_store::raft::{Inbox, Transport};
use rcgen::{CertificateParams, KeyPair};
use rustls::ClientConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cert::ALPN;
use super::frame::{self, HELLO_LEN};
use super::*;
use crate::tls::{ClusterCa, IssuedCert, provider};

const DEADLINE: Duration = Duration::from_secs(10);
const HERE: &str = "127.0.0.1";
const OTHER_HERE: &str = "127.0.0.2";

#[derive(Default)]
struct Collect(Mutex<Vec<Vec<u8>>>);

impl Inbox for Collect {
    fn deliver(&self, _from: flotilla_store::raft::NodeId, frame: Vec<u8>) {
        self.0.lock().unwrap().push(frame);
    }
}

impl Collect {
    fn frames(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    flotilla_testbed::poll::eventually_async(what, DEADLINE, async || cond().then_some(())).await
}

fn peer_tls(ca: &Arc<ClusterCa>, node: u64) -> Arc<PeerTls> {
    Arc::new(
        PeerTls::with_names(Arc::clone(ca), node, vec![HERE.into(), "localhost".into()]).unwrap(),
    )
}

async fn listen(tls: &Arc<PeerTls>, limits: PeerLimits) -> (PeerListener, Arc<Collect>) {
    let inbox = Arc::new(Collect::default());
    let l = PeerListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(tls),
        inbox.clone(),
        limits,
    )
    .await
    .unwrap();
    (l, inbox)
}

fn url(addr: SocketAddr) -> String {
    format!("https://{HERE}:{}", addr.port())
}

fn transport(tls: &Arc<PeerTls>, options: DialOptions) -> PeerTransport {
    PeerTransport::new(Arc::clone(tls), tokio::runtime::Handle::current(), options)
}

fn peers(list: &[(u64, String)]) -> BTreeMap<u64, String> {
    list.iter().cloned().collect()
}

/// A client configuration trusting `ca` and presenting `cert`.
fn client_config(ca: &ClusterCa, cert: IssuedCert) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(cert.chain, cert.key)
        .unwrap();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(config)
}

/// A user's or machine's client certificate, as `flotilla cert create` gets
/// one signed.
fn client_cert(ca: &ClusterCa, role: Role) -> IssuedCert {
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let pem = ca
        .sign_client(
            &csr,
            &[0x11, 0x22],
            "someone",
            role,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
    let leaf = crate::tls::certificates_from_pem("c", pem.as_bytes()).unwrap();
    IssuedCert {
        chain: vec![leaf[0].clone(), ca.cert_der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

async fn raw_tls(
    addr: SocketAddr,
    from: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    let tcp = socket.connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from(HERE).unwrap(), tcp)
        .await
}

/// A connection admitted by the listener: TLS with a peer certificate of
/// `ca`, and the hellos exchanged.
async fn admitted(addr: SocketAddr, from: &str, ca: &ClusterCa) -> TlsStream<TcpStream> {
    let cert = ca.issue_peer(9, &["localhost".into()]).unwrap();
    let mut s = raw_tls(addr, from, client_config(ca, cert)).await.unwrap();
    let fingerprint: [u8; 32] = sha2::Sha256::digest(ca.cert_der()).into();
    s.write_all(&frame::hello(&fingerprint)).await.unwrap();
    let mut theirs = [0u8; HELLO_LEN];
    s.read_exact(&mut theirs).await.unwrap();
    frame::check_hello(&theirs, &fingerprint).unwrap();
    s
}

/// Sends a hello of `ca`'s cluster and a frame, as a peer would (errors
/// ignored: the listener may have closed already).
async fn hello_and_frame<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, ca: &ClusterCa) {
    let fingerprint: [u8; 32] = sha2::Sha256::digest(ca.cert_der()).into();
    let _ = s.write_all(&frame::hello(&fingerprint)).await;
    let _ = send_frame(s, b"let me in").await;
}

/// Whether the other side closes the connection (or fails it) within the
/// deadline, whatever it sent first.
async fn closed_by_listener<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn send_frame<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, f: &[u8]) -> io::Result<()> {
    let mut out = Vec::new();
    frame::encode(&mut out, f);
    s.write_all(&out).await?;
    s.flush().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transports_exchange_frames_in_order_both_ways() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let (tls1, tls2) = (peer_tls(&ca, 1), peer_tls(&ca, 2));
    let (l1, inbox1) = listen(&tls1, PeerLimits::default()).await;
    let (l2, inbox2) = listen(&tls2, PeerLimits::default()).await;
    let members = peers(&[(1, url(l1.local_addr())), (2, url(l2.local_addr()))]);
    let t1 = transport(&tls1, DialOptions::default());
    let t2 = transport(&tls2, DialOptions::default());
    t1.set_peers(&members);
    t2.set_peers(&members);

    let n = 300;
    for i in 0..n {
        t1.send(2, format!("1->2 #{i}").into_bytes());
        t2.send(1, format!("2->1 #{i}").into_bytes());
    }
    eventually("every frame", || {
        inbox1.frames().len() == n && inbox2.frames().len() == n
    })
    .await;
    let want = |from: u64, to: u64| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{from}->{to} #{i}").into_bytes())
            .collect()
    };
    assert_eq!(inbox2.frames(), want(1, 2));
    assert_eq!(inbox1.frames(), want(2, 1));
    let counts = t1.counts(2).unwrap();
    assert_eq!(
        (counts.sent, counts.dropped, counts.connects),
        (n as u64, 0, 1)
    );
    assert_eq!(l2.counts().admitted, 1);
    assert_eq!(l2.counts().frames, n as u64);
    // Nothing was sent to itself, so it never dialled itself.
    assert_eq!(t1.counts(1).unwrap().connects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_reconnects_after_the_listener_restarts() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let (tls1, tls2) = (peer_tls(&ca, 1), peer_tls(&ca, 2));
    let (l2, inbox2) = listen(&tls2, PeerLimits::default()).await;
    let addr = l2.local_addr();
    let t1 = transport(&tls1, DialOptions::default());
    t1.set_peers(&peers(&[(2, url(addr))]));
    t1.send(2, b"before".to_vec());
    eventually("the first frame", || {
        inbox2.frames() == [b"before".to_vec()]
    })
    .await;

    l2.shutdown().await;
    let inbox2 = Arc::new(Collect::default());
    let l2 = PeerListener::bind(
        addr,
        Arc::clone(&tls2),
        inbox2.clone(),
        PeerLimits::default(),
    )
    .await
    .unwrap();
    // Frames sent while the old connection is found dead may be lost: send
    // until one arrives.
    let mut i = 0;
    eventually("a frame after the restart", || {
        if !inbox2.frames().is_empty() {
            return true;
        }
        t1.send(2, format!("after #{i}").into_bytes());
        i += 1;
        false
    })
    .await;
    assert!(inbox2.frames()[0].starts_with(b"after #"));
    assert_eq!(t1.counts(2).unwrap().connects, 2);
    assert_eq!(l2.counts().admitted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_users_and_machines_are_refused() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let (listener, inbox) = listen(&peer_tls(&ca, 1), PeerLimits::default()).await;
    let addr = listener.local_addr();
    for (i, role) in [Role::Operator, Role::Machine, Role::Admin]
        .into_iter()
        .enumerate()
    {
        let config = client_config(&ca, client_cert(&ca, role));
        // TLS 1.3 finishes the client's side before the server has read
        // its certificate: the refusal shows as the connection closing.
        if let Ok(mut s) = raw_tls(addr, HERE, config).await {
            hello_and_frame(&mut s, &ca).await;
            assert!(closed_by_listener(&mut s).await, "{role:?}");
        }
        eventually("the refusal counted", || {
            listener.counts().refused == i as u64 + 1
        })
        .await;
    }
    assert_eq!(listener.counts().admitted, 0);
    assert!(inbox.frames().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_certificates_are_refused_both_ways() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let other = Arc::new(ClusterCa::generate().unwrap());
    let (listener, inbox) = listen(&peer_tls(&ca, 1), PeerLimits::default()).await;
    let addr = listener.local_addr();

    // A peer certificate of the other cluster, presented to this one.
    let stranger = other.issue_peer(2, &["localhost".into()]).unwrap();
    if let Ok(mut s) = raw_tls(addr, HERE, client_config(&ca, stranger)).await {
        hello_and_frame(&mut s, &ca).await;
        assert!(closed_by_listener(&mut s).await);
    }
    eventually("the refusal counted", || listener.counts().refused == 1).await;

    // A transport of the other cluster refuses this listener's certificate
    // and is refused by it.
    let t = transport(&peer_tls(&other, 2), DialOptions::default());
    t.set_peers(&peers(&[(1, url(addr))]));
    t.send(1, b"hello?".to_vec());
    eventually("the dialler's refusal counted", || {
        listener.counts().refused >= 2
    })
    .await;
    assert_eq!(t.counts(1).unwrap().connects, 0);
    assert_eq!(listener.counts().admitted, 0);
    assert!(inbox.frames().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_of_another_cluster_or_protocol_is_refused() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let (listener, inbox) = listen(&peer_tls(&ca, 1), PeerLimits::default()).await;
    let addr = listener.local_addr();
    let mut wrong_version = frame::hello(&[0; 32]);
    wrong_version[6..8].copy_from_slice(&9u16.to_be_bytes());
    let hellos = [
        frame::hello(&[0xab; 32]).to_vec(),
        wrong_version.to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n----------".to_vec(),
    ];
    for (i, hello) in hellos.iter().enumerate() {
        let cert = ca.issue_peer(3, &["localhost".into()]).unwrap();
        let mut s = raw_tls(addr, HERE, client_config(&ca, cert)).await.unwrap();
        s.write_all(hello).await.unwrap();
        s.flush().await.unwrap();
        let _ = send_frame(&mut s, b"frame").await;
        assert!(closed_by_listener(&mut s).await, "hello #{i}");
        eventually("the refusal counted", || {
            listener.counts().refused == i as u64 + 1
        })
        .await;
    }
    assert_eq!(listener.counts().admitted, 0);
    assert!(inbox.frames().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_garbage_is_refused() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let (listener, inbox) = listen(&peer_tls(&ca, 1), PeerLimits::default()).await;
    let mut s = TcpStream::connect(listener.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_listener(&mut s).await);
    eventually("the refusal counted", || listener.counts().refused == 1).await;
    assert!(inbox.frames().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_connection() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let limits = PeerLimits {
        max_frame: 1024,
        ..PeerLimits::default()
    };
    let (listener, inbox) = listen(&peer_tls(&ca, 1), limits).await;
    let addr = listener.local_addr();
    let mut big = admitted(addr, HERE, &ca).await;
    let mut small = admitted(addr, HERE, &ca).await;

    send_frame(&mut big, &[1u8; 1024]).await.unwrap();
    eventually("a frame at the limit", || inbox.frames().len() == 1).await;
    let _ = send_frame(&mut big, &[2u8; 1025]).await;
    assert!(closed_by_listener(&mut big).await);

    send_frame(&mut small, b"still here").await.unwrap();
    eventually("the other connection's frame", || inbox.frames().len() == 2).await;
    assert_eq!(inbox.frames()[1], b"still here");
    assert_eq!(listener.counts().frames, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_cap_are_refused_others_still_work() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let limits = PeerLimits {
        max_connections_per_ip: 2,
        ..PeerLimits::default()
    };
    let (listener, inbox) = listen(&peer_tls(&ca, 1), limits).await;
    let addr = listener.local_addr();
    let mut first = admitted(addr, HERE, &ca).await;
    let mut second = admitted(addr, HERE, &ca).await;

    let cert = ca.issue_peer(9, &["localhost".into()]).unwrap();
    if let Ok(mut third) = raw_tls(addr, HERE, client_config(&ca, cert)).await {
        assert!(closed_by_listener(&mut third).await);
    }
    eventually("the refusal counted", || listener.counts().refused == 1).await;

    let mut elsewhere = admitted(addr, OTHER_HERE, &ca).await;
    send_frame(&mut first, b"first").await.unwrap();
    send_frame(&mut second, b"second").await.unwrap();
    send_frame(&mut elsewhere, b"elsewhere").await.unwrap();
    eventually("three frames", || inbox.frames().len() == 3).await;
    let mut frames = inbox.frames();
    frames.sort();
    assert_eq!(frames, [&b"elsewhere"[..], b"first", b"second"]);
    assert_eq!(listener.counts().admitted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_hello_timeout() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let limits = PeerLimits {
        hello_timeout: Duration::from_millis(300),
        max_connections_per_ip: 1,
        ..PeerLimits::default()
    };
    let (listener, _inbox) = listen(&peer_tls(&ca, 1), limits).await;
    let addr = listener.local_addr();

    // Not a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_listener(&mut silent).await);
    // TLS, but no hello.
    let cert = ca.issue_peer(9, &["localhost".into()]).unwrap();
    let mut mute = raw_tls(addr, HERE, client_config(&ca, cert)).await.unwrap();
    assert!(closed_by_listener(&mut mute).await);
    eventually("both refusals counted", || listener.counts().refused == 2).await;

    // Their place under the cap of one was given back.
    let _ok = admitted(addr, HERE, &ca).await;
    eventually("admitted", || listener.counts().admitted == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_frames_without_blocking_send() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    // A port where nothing listens: the frames wait in the queue.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let t = Arc::new(transport(
        &peer_tls(&ca, 1),
        DialOptions {
            queue: 4,
            ..DialOptions::default()
        },
    ));
    t.set_peers(&peers(&[(2, url(addr))]));

    // From a thread outside the runtime, as the raft loop calls it.
    let (done, finished) = std::sync::mpsc::channel();
    let sender = Arc::clone(&t);
    std::thread::spawn(move || {
        for i in 0..100u32 {
            sender.send(2, i.to_be_bytes().to_vec());
        }
        sender.send(7, b"to nobody".to_vec());
        let _ = done.send(());
    });
    finished
        .recv_timeout(DEADLINE)
        .expect("send blocked on a full queue");
    let counts = t.counts(2).unwrap();
    // Four wait in the queue, and the peer's task may hold one more.
    assert!(
        (95..=96).contains(&counts.dropped),
        "{} dropped",
        counts.dropped
    );
    assert_eq!(counts.sent, 0);
    assert_eq!(t.dropped_unknown(), 1);

    // A peer no longer listed is forgotten.
    t.set_peers(&BTreeMap::new());
    assert!(t.counts(2).is_none());
    t.send(2, b"late".to_vec());
    assert_eq!(t.dropped_unknown(), 2);
}

/// The server name checked is the peer URL's host: a certificate for other
/// names is refused by the dialler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialler_checks_the_peer_urls_name() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let elsewhere =
        Arc::new(PeerTls::with_names(Arc::clone(&ca), 2, vec!["db2.example".into()]).unwrap());
    let (listener, inbox) = listen(&elsewhere, PeerLimits::default()).await;
    let t = transport(&peer_tls(&ca, 1), DialOptions::default());
    t.set_peers(&peers(&[(2, url(listener.local_addr()))]));
    t.send(2, b"hello?".to_vec());
    eventually("the refusal", || listener.counts().refused >= 1).await;
    assert_eq!(t.counts(2).unwrap().connects, 0);
    assert!(inbox.frames().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_connection_is_closed_when_idle() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let limits = PeerLimits {
        idle_timeout: Duration::from_millis(300),
        ..PeerLimits::default()
    };
    let (listener, inbox) = listen(&peer_tls(&ca, 1), limits).await;
    let mut s = admitted(listener.local_addr(), HERE, &ca).await;
    send_frame(&mut s, b"one").await.unwrap();
    assert!(closed_by_listener(&mut s).await);
    assert_eq!(inbox.frames(), [b"one".to_vec()]);
}

/// A server that is not a peer (the API's certificate: signed by the same
/// CA, for the right name, but not `OU=flotilla-server`) is refused by the
/// dialler before it sends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialler_refuses_a_server_that_is_not_a_peer() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let api = ca.issue_server(&[HERE.into()]).unwrap();
    let mut config = (*crate::tls::server_config(api, ca.cert_der()).unwrap()).clone();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = tcp.accept().await.unwrap();
        let mut s = acceptor.accept(stream).await.unwrap();
        // What the dialler sends before it gives up: nothing.
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        got
    });

    let t = transport(&peer_tls(&ca, 1), DialOptions::default());
    t.set_peers(&peers(&[(2, url(addr))]));
    t.send(2, b"secret".to_vec());
    let got = tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the dialler did not close")
        .unwrap();
    assert!(got.is_empty(), "{} bytes sent to a non-peer", got.len());
    assert_eq!(t.counts(2).unwrap().connects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_listener_closes_its_connections() {
    let ca = Arc::new(ClusterCa::generate().unwrap());
    let (listener, _inbox) = listen(&peer_tls(&ca, 1), PeerLimits::default()).await;
    let addr = listener.local_addr();
    let mut s = admitted(addr, HERE, &ca).await;
    drop(listener);
    assert!(closed_by_listener(&mut s).await);
    eventually("the port closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}
