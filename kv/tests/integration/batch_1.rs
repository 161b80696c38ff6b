//! `BatchCommands` over a real gRPC server: answers matched by id, a slow write not holding up
//! the reads behind it on the same stream, and hostile messages answered clearly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kv::{
    Cas, CasOutcome, KvService, MemoryStorage, Modify, RawApi, RawLimits, Storage, StorageReader,
};
use proto::kvrpcpb::batch_request::Cmd as Request;
use proto::kvrpcpb::batch_response::Cmd as Answer;
use proto::kvrpcpb::Context;
use proto::kvrpcpb::{
    BatchCommandsRequest, BatchCommandsResponse, BatchRequest, BatchResponse, RawDeleteRequest,
    RawGetRequest, RawPutRequest,
};
use proto::tinykvpb::tiny_kv_client::TinyKvClient;
use proto::tinykvpb::tiny_kv_server::TinyKvServer;
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut service = KvService::new(RawApi::new(storage, RawLimits::default()));
    if let Some(rx) = stopping {
        service = service.with_stopping(rx);
    }
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
    let (tx, rx) = tmpsc::channel(8);
    let rx = client
        .batch_commands(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Stream { tx, rx }
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
    let too_many = (0..=kv::BATCH_MAX_REQUESTS as u64)
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
    // still answered, then the stream ends (a graceful shutdown does not wait for clients).
    stop.send(true).unwrap();
    gate.send(()).unwrap();
    let answers = s.answers(1).await;
    assert!(
        matches!(answers[0].cmd, Some(Answer::RawPut(_))),
        "{answers:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
}
