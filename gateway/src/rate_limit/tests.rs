use super::*;

fn limit(per_second: f64, burst: f64) -> ClusterLimit {
    ClusterLimit::new(RateLimit {
        per_second,
        burst,
        per: None,
    })
}

/// How many of `calls` back-to-back calls of client `key` one gateway lets through.
fn admitted(limit: &ClusterLimit, key: u64, gateways: usize, calls: usize) -> usize {
    (0..calls)
        .filter(|_| limit.take(key, gateways, "user").is_ok())
        .count()
}

#[tokio::test(start_paused = true)]
async fn alone_a_gateway_lets_the_whole_burst_through_then_the_rate() {
    let limit = limit(10.0, 20.0);
    assert_eq!(admitted(&limit, 0, 1, 50), 20);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!((9..=10).contains(&admitted(&limit, 0, 1, 50)));
}

#[tokio::test(start_paused = true)]
async fn each_of_three_gateways_holds_a_third_of_the_cluster_limit() {
    let limit = limit(300.0, 300.0);
    assert_eq!(admitted(&limit, 0, 3, 500), 100, "a third of the burst");
    // Over ten seconds at full pressure: a third of 300/s.
    let mut passed = 0;
    for _ in 0..100 {
        tokio::time::advance(Duration::from_millis(100)).await;
        passed += admitted(&limit, 0, 3, 50);
    }
    assert!((990..=1010).contains(&passed), "{passed} in 10 s");
}

#[tokio::test(start_paused = true)]
async fn a_gateway_leaving_splits_the_limit_again_at_the_next_call() {
    let limit = limit(300.0, 300.0);
    assert_eq!(admitted(&limit, 0, 3, 500), 100);
    // One of three left: this gateway's share is half now, starting full.
    assert_eq!(admitted(&limit, 0, 2, 500), 150);
    tokio::time::advance(Duration::from_secs(1)).await;
    // A second's worth at 150/s (the last call of the burst holds its slot's time).
    assert!((149..=150).contains(&admitted(&limit, 0, 2, 500)));
    assert_eq!(limit.describe()["gateways"], 2);
    assert_eq!(limit.describe()["this_gateway_per_second"], 150.0);
}

#[tokio::test(start_paused = true)]
async fn clients_keyed_apart_have_buckets_of_their_own_and_keyless_calls_share_one() {
    let limit = ClusterLimit::new(RateLimit {
        per_second: 1.0,
        burst: 2.0,
        per: Some(ClientKey::Header("x-api-key".into())),
    });
    let (alice, bob) = (key_of(b"alice"), key_of(b"bob"));
    assert_eq!(admitted(&limit, alice, 1, 5), 2);
    assert_eq!(
        admitted(&limit, bob, 1, 5),
        2,
        "alice's calls took none of bob's"
    );
    assert_eq!(admitted(&limit, 0, 1, 5), 2);
    assert_eq!(limit.describe()["clients"], 3);
}

#[tokio::test(start_paused = true)]
async fn the_caller_is_told_the_clusters_limit_what_is_left_and_when_it_is_full() {
    let limit = limit(30.0, 30.0);
    // Three gateways: this one holds 10 of the 30, refilling one every 100 ms.
    let first = limit.take(0, 3, "user").unwrap();
    assert_eq!(first.limit, 30);
    assert_eq!(
        first.remaining, 27,
        "nine left here, as the cluster's figure"
    );
    assert_eq!(first.reset_seconds, 1);
    for _ in 0..9 {
        limit.take(0, 3, "user").unwrap();
    }
    let refused = limit.take(0, 3, "user").unwrap_err();
    assert_eq!(refused.allowance.remaining, 0);
    assert!(
        refused.wait > Duration::ZERO && refused.wait <= Duration::from_millis(100),
        "{:?}",
        refused.wait
    );
    assert_eq!(refused.allowance.reset_seconds, 1);
    let mut headers = http::HeaderMap::new();
    refused.allowance.write(&mut headers);
    assert_eq!(headers["ratelimit-limit"], "30");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], "1");
}

#[tokio::test(start_paused = true)]
async fn a_burst_smaller_than_the_gateways_still_lets_one_call_through_at_each() {
    let limit = limit(1.0, 2.0);
    assert_eq!(admitted(&limit, 0, 5, 10), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_clients_buckets_are_dropped_once_full_again() {
    let limit = ClusterLimit::new(RateLimit {
        per_second: 100.0,
        burst: 1.0,
        per: Some(ClientKey::ClientIp),
    });
    for n in 0..100u64 {
        let _ = limit.take(n, 1, "user");
    }
    assert_eq!(limit.describe()["clients"], 100);
    tokio::time::advance(FORGET_EVERY + Duration::from_secs(1)).await;
    let _ = limit.take(1000, 1, "user");
    assert_eq!(
        limit.describe()["clients"],
        1,
        "only the latest caller is kept"
    );
}

#[test]
fn limits_that_cannot_work_are_refused_naming_the_field() {
    let with = |per| RateLimit {
        per_second: 1.0,
        burst: 1.0,
        per,
    };
    for (limit, jwt, field) in [
        (
            with(Some(ClientKey::Header("X-Api-Key".into()))),
            false,
            "per.header",
        ),
        (
            with(Some(ClientKey::Header(String::new()))),
            false,
            "per.header",
        ),
        (
            with(Some(ClientKey::Header("bad header".into()))),
            false,
            "per.header",
        ),
        (
            with(Some(ClientKey::Claim("sub".into()))),
            false,
            "per.claim",
        ),
        (
            with(Some(ClientKey::Claim(String::new()))),
            true,
            "per.claim",
        ),
        (
            RateLimit {
                per_second: 1e10,
                ..with(None)
            },
            false,
            "per_second",
        ),
        (
            RateLimit {
                burst: 1e10,
                ..with(None)
            },
            false,
            "burst",
        ),
    ] {
        assert_eq!(
            limit.check(jwt).map_err(|(f, _)| f),
            Err(field),
            "{limit:?}"
        );
    }
    assert!(
        with(Some(ClientKey::Claim("sub".into())))
            .check(true)
            .is_ok()
    );
    assert!(with(Some(ClientKey::ClientIp)).check(false).is_ok());
}

#[test]
fn a_v4_client_over_a_dual_stack_socket_is_the_same_client() {
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(key_of_address(v4), key_of_address(mapped));
}
