//! `BatchCommands` over a real gRPC server: answers matched by id, a slow write not holding up
//! the reads behind it on the same stream, hostile messages answered clearly, and the server's
//! bounds on open streams and on requests in flight over all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kv::{Cas, CasOutcome, MemoryStorage, Modify, RawApi, RawLimits, Storage, StorageReader};
use proto::kvrpcpb::batch_request::Cmd as Request;
use proto::kvrpcpb::batch_response::Cmd as Answer;
use proto::kvrpcpb::Context;
use proto::kvrpcpb::{
    BatchCommandsRequest, BatchCommandsResponse, BatchRequest, BatchResponse, RawDeleteRequest,
    RawGetRequest, RawPutRequest,
};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use proto::tinykvpb::tiny_kv_server::TinyKvServer;
use server::kv_service::{BatchLimits, BATCH_MAX_REQUESTS};
use server::KvService;
use tokio::sync::{mpsc as tmpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// A storage whose writes wait for a ticket each, as a replicated write waits for its commit.
struct GatedStorage {
    inner: MemoryStorage,
    tickets: Mutex<mpsc::Receiver<()>>,
    /// Writes that have reached the gate.
    waiting: AtomicUsize,
}

impl GatedStorage {
    fn new(tickets: mpsc::Receiver<()>) -> GatedStorage {
        GatedStorage {
            inner: MemoryStorage::new(),
            tickets: Mutex::new(tickets),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits (10 s at most) until `n` writes have reached the gate.
    async fn wait_for_writes(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.waiting.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no write reached the gate"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Storage for GatedStorage {
    fn write(&self, ctx: &Context, batch: Vec<Modify>) -> kv::Result<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let tickets = self.tickets.lock().unwrap();
        tickets
            .recv()
            .map_err(|_| kv::Error::Unavailable("the gate closed".to_string()))?;
        drop(tickets);
        self.inner.write(ctx, batch)
    }

    fn compare_and_swap(&self, ctx: &Context, cas: Cas) -> kv::Result<CasOutcome> {
        self.inner.compare_and_swap(ctx, cas)
    }

    fn reader(&self, ctx: &Context) -> kv::Result<Box<dyn StorageReader>> {
        self.inner.reader(ctx)
    }
}

/// Serves `storage` on a loopback port; returns a client of it.
async fn serve<S: Storage>(storage: Arc<S>) -> TinyKvClient<Channel> {
    serve_until(storage, None).await
}

/// As [`serve`], its streams ending once `stopping` (if given) says `true`.
async fn serve_until<S: Storage>(
    storage: Arc<S>,
    stopping: Option<watch::Receiver<bool>>,
) -> TinyKvClient<Channel> {
    let mut service = KvService::new(RawApi::new(storage, RawLimits::default()));
    if let Some(rx) = stopping {
        service = service.with_stopping(rx);
    }
    serve_service(service).await
}

/// As [`serve`], with at most `streams` streams open and `in_flight` small requests running
/// at once (each counts 1 KiB of the server's in-flight bytes).
async fn serve_limited<S: Storage>(
    storage: Arc<S>,
    streams: usize,
    in_flight: usize,
) -> TinyKvClient<Channel> {
    let service = KvService::new(RawApi::new(storage, RawLimits::default()))
        .with_batch_limits(BatchLimits::new(streams, in_flight * 1024));
    serve_service(service).await
}

async fn serve_service<S: Storage>(service: KvService<S>) -> TinyKvClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TinyKvServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    TinyKvClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// An open stream: where to send messages, and the answers.
struct Stream {
    tx: tmpsc::Sender<BatchCommandsRequest>,
    rx: Streaming<BatchCommandsResponse>,
}

async fn open(client: &mut TinyKvClient<Channel>) -> Stream {
    try_open(client).await.unwrap()
}

/// Opens a stream, or says why the server refused it.
async fn try_open(client: &mut TinyKvClient<Channel>) -> Result<Stream, tonic::Status> {
    let (tx, rx) = tmpsc::channel(8);
    let rx = client
        .batch_commands(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Stream { tx, rx })
}

impl Stream {
    async fn send(&self, requests: Vec<BatchRequest>) {
        self.tx
            .send(BatchCommandsRequest { requests })
            .await
            .unwrap();
    }

    /// The next `n` answers, in arrival order, whatever messages they come in.
    async fn answers(&mut self, n: usize) -> Vec<BatchResponse> {
        let mut out = Vec::new();
        while out.len() < n {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await
                .expect("an answer within 10 s")
                .expect("the stream stays open")
                .expect("more answers come");
            out.extend(msg.responses);
        }
        assert_eq!(out.len(), n, "no more answers than requests: {out:?}");
        out
    }
}

fn put(id: u64, key: &str, value: &str) -> BatchRequest {
    BatchRequest {
        id,
        cmd: Some(Request::RawPut(RawPutRequest {
            key: key.into(),
            value: value.into(),
            cf: "default".into(),
            ..Default::default()
        })),
    }
}

fn get(id: u64, key: &str) -> BatchRequest {
    BatchRequest {
        id,
        cmd: Some(Request::RawGet(RawGetRequest {
            key: key.into(),
            cf: "default".into(),
            ..Default::default()
        })),
    }
}

fn delete(id: u64, key: &str) -> BatchRequest {
    BatchRequest {
        id,
        cmd: Some(Request::RawDelete(RawDeleteRequest {
            key: key.into(),
            cf: "default".into(),
            ..Default::default()
        })),
    }
}

/// The answer with `id`.
fn by_id(answers: &[BatchResponse], id: u64) -> &BatchResponse {
    let mut with_id = answers.iter().filter(|a| a.id == id);
    let a = with_id.next().unwrap_or_else(|| panic!("no answer {id}"));
    assert!(with_id.next().is_none(), "answer {id} came twice");
    a
}

/// What a get answer says: `Some(value)` or `None` when absent.
fn got(a: &BatchResponse) -> Option<Vec<u8>> {
    match &a.cmd {
        Some(Answer::RawGet(r)) => {
            assert!(r.error.is_empty() && r.region_error.is_none(), "{r:?}");
            (!r.not_found).then(|| r.value.clone())
        }
        other => panic!("not a get answer: {other:?}"),
    }
}

#[tokio::test]
async fn batch_stream_answers_gets_puts_and_deletes_by_id_1() {
    let mut client = serve(Arc::new(MemoryStorage::new())).await;
    let mut s = open(&mut client).await;
    s.send(vec![put(7, "a", "1"), put(3, "b", "2")]).await;
    let answers = s.answers(2).await;
    for id in [7, 3] {
        match &by_id(&answers, id).cmd {
            Some(Answer::RawPut(r)) => assert!(r.error.is_empty(), "{r:?}"),
            other => panic!("answer {id} is not a put's: {other:?}"),
        }
    }
    s.send(vec![
        get(10, "a"),
        get(11, "b"),
        get(12, "nothing"),
        delete(13, "a"),
    ])
    .await;
    let answers = s.answers(4).await;
    assert_eq!(got(by_id(&answers, 11)), Some(b"2".to_vec()));
    assert_eq!(got(by_id(&answers, 12)), None);
    assert!(matches!(
        by_id(&answers, 13).cmd,
        Some(Answer::RawDelete(_))
    ));
    // The get of "a" ran alongside its delete: either answer is right, a third is not.
    let a = got(by_id(&answers, 10));
    assert!(a.is_none() || a == Some(b"1".to_vec()), "{a:?}");
    s.send(vec![get(14, "a")]).await;
    assert_eq!(
        got(by_id(&s.answers(1).await, 14)),
        None,
        "the delete applied"
    );

    // Ending the request side ends the answers once everything is answered.
    let Stream { tx, mut rx } = s;
    drop(tx);
    assert!(rx.message().await.unwrap().is_none());
}

#[tokio::test]
async fn slow_write_does_not_hold_up_the_reads_behind_it_1() {
    let (gate, tickets) = mpsc::channel();
    let storage = Arc::new(GatedStorage::new(tickets));
    storage
        .inner
        .write(
            &Context::default(),
            vec![Modify::Put {
                cf: kv::Cf::Default,
                key: b"r".to_vec(),
                value: b"old".to_vec(),
            }],
        )
        .unwrap();
    let mut client = serve(storage).await;
    let mut s = open(&mut client).await;
    s.send(vec![put(1, "w", "new")]).await;
    s.send(vec![get(2, "r")]).await;
    // The put waits at the gate; the get behind it is answered.
    let first = s.answers(1).await;
    assert_eq!(first[0].id, 2, "{first:?}");
    assert_eq!(got(&first[0]), Some(b"old".to_vec()));
    gate.send(()).unwrap();
    let second = s.answers(1).await;
    assert_eq!(second[0].id, 1, "{second:?}");
    s.send(vec![get(3, "w")]).await;
    assert_eq!(got(&s.answers(1).await[0]), Some(b"new".to_vec()));
}

#[tokio::test]
async fn hostile_batch_messages_get_clear_answers_1() {
    let mut client = serve(Arc::new(MemoryStorage::new())).await;
    let mut s = open(&mut client).await;
    // A request without a command, and one with an empty key: each gets its own error, and
    // the stream goes on.
    let empty = BatchRequest { id: 5, cmd: None };
    s.send(vec![empty, put(6, "", "v"), put(7, "k", "v")]).await;
    let answers = s.answers(3).await;
    let a = by_id(&answers, 5);
    assert!(a.cmd.is_none() && a.error.contains("no command"), "{a:?}");
    match &by_id(&answers, 6).cmd {
        Some(Answer::RawPut(r)) => assert!(r.error.contains("key"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    match &by_id(&answers, 7).cmd {
        Some(Answer::RawPut(r)) => assert!(r.error.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }

    // One message over the request limit ends the stream with a clear status.
    let too_many = (0..=BATCH_MAX_REQUESTS as u64)
        .map(|i| get(100 + i, "k"))
        .collect();
    s.send(too_many).await;
    let refused = match s.rx.message().await {
        Ok(Some(m)) => panic!(
            "answered an oversized message: {} answers",
            m.responses.len()
        ),
        Ok(None) => panic!("the stream ended without saying why"),
        Err(status) => status,
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("at most 1024"), "{refused}");

    // The server goes on serving other streams.
    let mut again = open(&mut client).await;
    again.send(vec![get(1, "k")]).await;
    assert_eq!(got(&again.answers(1).await[0]), Some(b"v".to_vec()));
}

#[tokio::test]
async fn stopping_server_ends_open_streams_after_answering_them_1() {
    let (gate, tickets) = mpsc::channel();
    let storage = Arc::new(GatedStorage::new(tickets));
    let (stop, stopping) = watch::channel(false);
    let mut client = serve_until(storage.clone(), Some(stopping)).await;
    let mut s = open(&mut client).await;
    s.send(vec![put(1, "k", "v")]).await;
    storage.wait_for_writes(1).await;
    // The server stops while the put runs and the client keeps its side open: the put is
    // still answered, the server says which requests it read (so the client knows any it sent
    // later never ran), then the stream ends (a graceful shutdown does not wait for clients).
    stop.send(true).unwrap();
    gate.send(()).unwrap();
    let answers = s.answers(1).await;
    assert!(
        matches!(answers[0].cmd, Some(Answer::RawPut(_))),
        "{answers:?}"
    );
    let goodbye = tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await;
    match goodbye {
        Ok(Ok(Some(m))) => {
            assert!(m.ends && m.responses.is_empty(), "{m:?}");
            assert_eq!(m.last_read_id, 1, "{m:?}");
        }
        other => panic!("expected the closing message, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
}

/// Any client can open streams, each with thousands of requests in flight: the server bounds
/// how many are open at once, refusing one past the bound with a clear status, and takes a new
/// one once an open one ends.
#[tokio::test]
async fn streams_past_the_server_bound_are_refused_until_one_ends_1() {
    let mut client = serve_limited(Arc::new(MemoryStorage::new()), 2, 64).await;
    let first = open(&mut client).await;
    let mut second = open(&mut client).await;
    let refused = match try_open(&mut client).await {
        Ok(_) => panic!("a third stream was opened past a bound of two"),
        Err(status) => status,
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("at most 2"), "{refused}");
    // The open ones go on serving.
    second.send(vec![put(1, "k", "v")]).await;
    second.answers(1).await;
    // Once a stream ends, its place is free again (the server notices the end a moment later).
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut third = loop {
        match try_open(&mut client).await {
            Ok(s) => break s,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the ended stream's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    third.send(vec![get(2, "k")]).await;
    assert_eq!(got(&third.answers(1).await[0]), Some(b"v".to_vec()));
}

/// Requests in flight are bounded over all streams together: past the bound a stream's requests
/// wait (they are neither dropped nor refused) until running ones complete. A request larger
/// than the whole bound still runs, alone.
#[tokio::test]
async fn requests_past_the_in_flight_bound_wait_for_running_ones_1() {
    let (gate, tickets) = mpsc::channel();
    let storage = Arc::new(GatedStorage::new(tickets));
    let mut client = serve_limited(storage.clone(), 8, 2).await;
    let mut writer = open(&mut client).await;
    let mut reader = open(&mut client).await;
    writer
        .send(vec![put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "3")])
        .await;
    storage.wait_for_writes(2).await;
    // Two puts hold the server's two places; the third put and the other stream's get wait.
    reader.send(vec![get(4, "a")]).await;
    let early = tokio::time::timeout(Duration::from_millis(300), reader.rx.message()).await;
    assert!(
        early.is_err(),
        "answered past the in-flight bound: {early:?}"
    );
    assert_eq!(
        storage.waiting.load(Ordering::SeqCst),
        2,
        "a third write started"
    );
    // Each completed put frees a place; every request is answered in the end.
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    let mut puts: Vec<u64> = writer.answers(3).await.iter().map(|a| a.id).collect();
    puts.sort_unstable();
    assert_eq!(puts, vec![1, 2, 3]);
    let read = reader.answers(1).await;
    assert_eq!(read[0].id, 4);
    assert!(matches!(read[0].cmd, Some(Answer::RawGet(_))), "{read:?}");

    // A 4 KiB put is past the whole 2 KiB bound: it holds all of it, and runs.
    let big = "x".repeat(4096);
    writer.send(vec![put(5, "big", &big)]).await;
    storage.wait_for_writes(4).await;
    gate.send(()).unwrap();
    assert_eq!(writer.answers(1).await[0].id, 5);
    reader.send(vec![get(6, "big")]).await;
    assert_eq!(got(&reader.answers(1).await[0]), Some(big.into_bytes()));
}
