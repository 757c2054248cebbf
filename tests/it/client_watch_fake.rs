//! The watch machinery against a scripted in-process Watch server: the test plays the server
//! and checks each request the client sends, including the ones a real server never makes
//! the client send (cancels for unknown ids, resumes after a broken stream, duplicates).

use std::time::Duration;

use minietcd::pb::etcdserverpb::watch_server::{Watch, WatchServer};
use minietcd::pb::etcdserverpb::{
    watch_request::RequestUnion, ResponseHeader, WatchRequest, WatchResponse,
};
use minietcd::pb::mvccpb::{Event, KeyValue};
use minietcd_client::{Client, ClientError, ClientOptions, WatchOptions, Watcher};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of one watch stream, driven by the test.
struct ServerStream {
    requests: Streaming<WatchRequest>,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl ServerStream {
    async fn next(&mut self) -> RequestUnion {
        let req = tokio::time::timeout(STEP_TIMEOUT, self.requests.message())
            .await
            .expect("client request in time")
            .expect("stream alive")
            .expect("a request");
        req.request_union.expect("request body")
    }
    async fn send(&self, resp: WatchResponse) {
        self.responses
            .send(Ok(resp))
            .await
            .expect("client still reading");
    }
}

struct FakeWatch {
    streams: mpsc::Sender<ServerStream>,
}

#[tonic::async_trait]
impl Watch for FakeWatch {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let stream = ServerStream {
            requests: request.into_inner(),
            responses: tx,
        };
        self.streams
            .send(stream)
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn fake_server() -> (String, mpsc::Receiver<ServerStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WatchServer::new(FakeWatch { streams: tx }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr.to_string(), rx)
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision,
        raft_term: 3,
    })
}

fn created(watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: header(revision),
        watch_id,
        created: true,
        ..Default::default()
    }
}

fn event(key: &str, rev: i64) -> Event {
    Event {
        r#type: 0,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: format!("v{rev}").into_bytes(),
            lease: 0,
        }),
        prev_kv: None,
    }
}

fn events(watch_id: i64, key: &str, revs: &[i64], fragment: bool) -> WatchResponse {
    WatchResponse {
        header: header(*revs.last().unwrap_or(&0)),
        watch_id,
        fragment,
        events: revs.iter().map(|r| event(key, *r)).collect(),
        ..Default::default()
    }
}

async fn next_revs(w: &mut Watcher) -> Vec<i64> {
    let batch = tokio::time::timeout(STEP_TIMEOUT, w.recv())
        .await
        .expect("batch in time")
        .expect("open")
        .expect("ok");
    batch
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect()
}

fn expect_create(req: RequestUnion) -> (Vec<u8>, i64) {
    match req {
        RequestUnion::CreateRequest(c) => (c.key, c.start_revision),
        other => panic!("expected a create request, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_stream_protocol_against_a_scripted_server() {
    let (addr, mut streams) = fake_server().await;
    let client = Client::connect([addr], ClientOptions::new()).await.unwrap();
    let watch = client.watch();

    // Creation: one create in flight at a time, each `created` matched to the head.
    let w1 = tokio::spawn({
        let watch = watch.clone();
        async move { watch.watch("k", WatchOptions::new()).await }
    });
    let mut s = tokio::time::timeout(STEP_TIMEOUT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expect_create(s.next().await), (b"k".to_vec(), 0));
    let w2 = tokio::spawn({
        let watch = watch.clone();
        async move { watch.watch("q", WatchOptions::new()).await }
    });
    s.send(created(7, 10)).await;
    assert_eq!(expect_create(s.next().await), (b"q".to_vec(), 0));
    s.send(created(8, 10)).await;
    let mut k = w1.await.unwrap().unwrap();
    let mut q = w2.await.unwrap().unwrap();
    assert_eq!((k.watch_id(), q.watch_id()), (7, 8));

    // A response for an unknown id is answered with exactly one cancel.
    s.send(events(99, "x", &[11], false)).await;
    s.send(events(99, "x", &[12], false)).await;
    match s.next().await {
        RequestUnion::CancelRequest(c) => assert_eq!(c.watch_id, 99),
        other => panic!("expected a cancel, got {other:?}"),
    }

    // Fragments are merged into one batch; an event already delivered is not delivered again.
    s.send(events(7, "k", &[11], true)).await;
    s.send(events(7, "k", &[12], true)).await;
    s.send(events(7, "k", &[13], false)).await;
    assert_eq!(next_revs(&mut k).await, vec![11, 12, 13]);
    s.send(events(7, "k", &[12, 13], false)).await;
    s.send(events(7, "k", &[14], false)).await;
    assert_eq!(next_revs(&mut k).await, vec![14]);

    // Progress requests reach the server (and nothing else was sent in between: the second
    // unknown-id response did not get a second cancel).
    watch.request_progress().await.unwrap();
    assert!(matches!(s.next().await, RequestUnion::ProgressRequest(_)));

    // The stream breaks: the client reconnects and resumes each watcher from its next
    // revision, in creation order, one create at a time.
    s.responses
        .send(Err(Status::unavailable("member went away")))
        .await
        .unwrap();
    drop(s);
    let mut s = tokio::time::timeout(STEP_TIMEOUT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expect_create(s.next().await), (b"k".to_vec(), 15));
    s.send(created(0, 20)).await;
    // `q` saw no event: it resumes after its creation revision, not from "now".
    assert_eq!(expect_create(s.next().await), (b"q".to_vec(), 11));
    s.send(created(1, 20)).await;
    s.send(events(1, "q", &[16], false)).await;
    s.send(events(0, "k", &[15, 17], false)).await;
    assert_eq!(next_revs(&mut q).await, vec![16]);
    assert_eq!(next_revs(&mut k).await, vec![15, 17]);

    // Compaction ends a watcher with the compacted revision.
    s.send(WatchResponse {
        header: header(30),
        watch_id: 1,
        canceled: true,
        compact_revision: 25,
        ..Default::default()
    })
    .await;
    let err = tokio::time::timeout(STEP_TIMEOUT, q.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        ClientError::Compacted {
            compact_revision: 25
        }
    );
    assert!(q.recv().await.is_none(), "a compacted watcher ends");

    // Dropping a watcher cancels it on the server.
    drop(k);
    match s.next().await {
        RequestUnion::CancelRequest(c) => assert_eq!(c.watch_id, 0),
        other => panic!("expected a cancel for the dropped watcher, got {other:?}"),
    }

    // With the client and every watcher gone, the stream task ends and closes its stream.
    drop(watch);
    drop(client);
    let end = tokio::time::timeout(STEP_TIMEOUT, s.requests.message())
        .await
        .expect("stream closed in time");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no request expected after the end: {end:?}"
    );
}

#[tokio::test]
async fn a_refused_create_is_reported_to_the_caller() {
    let (addr, mut streams) = fake_server().await;
    let client = Client::connect([addr], ClientOptions::new()).await.unwrap();
    let watch = client.watch();
    let pending = tokio::spawn({
        let watch = watch.clone();
        async move {
            watch
                .watch("k", WatchOptions::new().start_revision(3))
                .await
                .map(|w| w.watch_id())
        }
    });
    let mut s = tokio::time::timeout(STEP_TIMEOUT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expect_create(s.next().await), (b"k".to_vec(), 3));
    s.send(WatchResponse {
        header: header(10),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: "permission denied".into(),
        ..Default::default()
    })
    .await;
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        ClientError::WatchCanceled {
            reason: "permission denied".into()
        }
    );
}
