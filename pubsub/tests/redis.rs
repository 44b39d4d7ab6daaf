//! Pub/sub on a real `redis-server` (ignored by default: run with
//! `cargo test -p yuki-pubsub --features redis --test redis -- --ignored`):
//! the shared suite, each "process" a connection of its own, then what is
//! particular to Redis.
#![cfg(feature = "redis")]

mod suite;

use yuki_pubsub::{Error, PubSub};
use yuki_testkit::RedisServer;

use suite::WAIT;

/// A server, and main's and five children's connections to it.
struct OnRedis {
    _server: RedisServer,
    main: PubSub,
    children: Vec<PubSub>,
}

fn on_redis() -> OnRedis {
    let server = server();
    let connect = || PubSub::redis(&server.url()).unwrap();
    OnRedis {
        main: connect(),
        children: (0..5).map(|_| connect()).collect(),
        _server: server,
    }
}

impl suite::Harness for OnRedis {
    fn main(&self) -> PubSub {
        self.main.clone()
    }
    fn child(&self, index: usize) -> PubSub {
        self.children[index].clone()
    }
    fn counts_subscriptions(&self) -> bool {
        false
    }
}

suite::pubsub_suite!(
    #[ignore = "needs redis-server"]
    on_redis()
);

fn server() -> RedisServer {
    RedisServer::start().expect("redis-server must be installed for the ignored tests")
}

fn recv<M: serde::de::DeserializeOwned>(s: &yuki_pubsub::Subscription<M>) -> (String, M) {
    let m = s.recv_timeout(WAIT).expect("a message in time");
    (m.topic().to_owned(), m.into_value())
}

#[test]
#[ignore = "needs redis-server"]
fn exact_and_wildcard_patterns_receive_exactly_what_they_match() {
    let server = server();
    let a = PubSub::redis(&server.url()).unwrap();
    let b = PubSub::redis(&server.url()).unwrap();
    let exact = b.subscribe::<String>("chat.room1").unwrap();
    let one = b.subscribe::<String>("chat.*").unwrap();
    let rest = b.subscribe::<String>("chat.>").unwrap();
    let mid = b.subscribe::<String>("*.room1.x").unwrap();
    // Redis counts one per matching channel or glob subscription of a
    // connection: "chat.*" and "chat.>" share the glob `chat.*`, which in
    // Redis also crosses dots; "chat.*" must still not see "chat.a.b".
    assert_eq!(a.publish("chat.a.b", "deep").unwrap(), 1);
    assert_eq!(a.publish("chat.room1", "hi").unwrap(), 2);
    assert_eq!(a.publish("chat.room1.x", "x").unwrap(), 2);
    assert_eq!(recv(&exact), ("chat.room1".into(), "hi".into()));
    assert_eq!(recv(&one), ("chat.room1".into(), "hi".into()));
    assert_eq!(recv(&rest), ("chat.a.b".into(), "deep".into()));
    assert_eq!(recv(&rest), ("chat.room1".into(), "hi".into()));
    assert_eq!(recv(&rest), ("chat.room1.x".into(), "x".into()));
    assert_eq!(recv(&mid), ("chat.room1.x".into(), "x".into()));
    for s in [&exact, &one, &mid] {
        assert_eq!(s.try_recv().unwrap_err(), Error::Empty);
    }
    // Nobody subscribed: Redis counts 0.
    assert_eq!(a.publish("other", "x").unwrap(), 0);
    assert!(matches!(
        a.publish("a..b", "x"),
        Err(Error::InvalidTopic { .. })
    ));
    assert!(matches!(
        a.subscribe::<u8>("a.>.b"),
        Err(Error::InvalidPattern { .. })
    ));
    assert!(format!("{a:?}").contains("redis"));
}

#[test]
#[ignore = "needs redis-server"]
fn glob_characters_in_topics_are_literal() {
    let server = server();
    let ps = PubSub::redis(&server.url()).unwrap();
    let odd = ps.subscribe::<u32>("a?.[b].*").unwrap();
    assert_eq!(ps.publish("ax.b.c", &1u32).unwrap(), 0);
    assert_eq!(ps.publish("a?.[b].c", &2u32).unwrap(), 1);
    assert_eq!(recv(&odd), ("a?.[b].c".into(), 2));
    assert_eq!(odd.try_recv().unwrap_err(), Error::Empty);
}

#[test]
#[ignore = "needs redis-server"]
fn namespaces_keep_applications_apart_and_dropping_unsubscribes() {
    let server = server();
    let one = PubSub::redis_with_namespace(&server.url(), "app1:").unwrap();
    let two = PubSub::redis_with_namespace(&server.url(), "app2:").unwrap();
    let s1 = one.subscribe::<u8>("t").unwrap();
    let s2 = two.subscribe::<u8>("t").unwrap();
    assert_eq!(one.publish("t", &1u8).unwrap(), 1);
    assert_eq!(recv(&s1).1, 1);
    assert_eq!(s2.try_recv().unwrap_err(), Error::Empty);
    drop(s2);
    // The unsubscribe is asynchronous: wait until Redis counts nobody.
    let deadline = std::time::Instant::now() + WAIT;
    while two.publish("t", &2u8).unwrap() != 0 {
        assert!(std::time::Instant::now() < deadline, "still subscribed");
        std::thread::yield_now();
    }
}

#[test]
#[ignore = "needs redis-server"]
fn bad_urls_and_refusing_servers_name_the_address() {
    let err = PubSub::redis("not a url").unwrap_err();
    assert!(err.to_string().contains("not a url"), "{err}");
    let url = RedisServer::refusing_url().unwrap();
    let err = PubSub::redis(&url).unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err}");
    let address = url.trim_start_matches("redis://");
    assert!(err.to_string().contains(address), "{err}");
}

#[test]
#[ignore = "needs redis-server"]
fn a_killed_server_gives_errors_then_recovery_and_a_gap() {
    let mut server = server();
    let publisher = PubSub::redis(&server.url()).unwrap();
    let subscriber = PubSub::redis(&server.url()).unwrap();
    let sub = subscriber.subscribe::<u32>("live.*").unwrap();
    assert_eq!(publisher.publish("live.a", &1u32).unwrap(), 1);
    assert_eq!(recv(&sub).1, 1);

    server.kill();
    // The subscriber learns that messages may have been missed.
    assert_eq!(sub.recv_timeout(WAIT).unwrap_err(), Error::Reconnected);
    let err = publisher.publish("live.a", &2u32).unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err}");
    assert!(
        err.to_string().contains(&server.port().to_string()),
        "{err}"
    );

    server.restart().unwrap();
    // Both reconnect by themselves and the subscription is back.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match publisher.publish("live.b", &3u32) {
            Ok(1) => break,
            Ok(_) | Err(_) => {
                assert!(std::time::Instant::now() < deadline, "no recovery");
                std::thread::yield_now();
            }
        }
    }
    assert_eq!(recv(&sub), ("live.b".into(), 3));
}
