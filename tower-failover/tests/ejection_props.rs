//! Property: passive ejection happens exactly when `N` consecutive transient outcomes first
//! occur, whatever the mix of successes and permanent failures before.

mod common;

use common::{Mock, get};
use proptest::prelude::*;
use tower::ServiceExt;
use tower_failover::{Endpoint, EndpointStatus, Failover};

fn first_run_end(statuses: &[u16], n: usize) -> Option<usize> {
    let mut run = 0;
    for (i, s) in statuses.iter().enumerate() {
        let transient = matches!(s, 500 | 502 | 503 | 504 | 408 | 429);
        run = if transient { run + 1 } else { 0 };
        if run == n {
            return Some(i);
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn ejected_exactly_after_n_consecutive_transients(
        statuses in proptest::collection::vec(prop_oneof![Just(200u16), Just(404), Just(503), Just(502)], 1..40),
        n in 1u32..5,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (p, s) = (Mock::new("p"), Mock::new("s"));
            let f = Failover::builder()
                .tier([Endpoint::new("p", p.base(), p.clone())])
                .tier([Endpoint::new("s", s.base(), s.clone())])
                .eject_after(n)
                .build()
                .unwrap();
            let expected = first_run_end(&statuses, n as usize);
            for (i, status) in statuses.iter().enumerate() {
                p.set_status(*status);
                let res = f.clone().oneshot(get("/")).await.unwrap();
                let ejected = f.handle().endpoint("p").unwrap().status == EndpointStatus::Ejected;
                match expected {
                    Some(at) if i >= at => {
                        prop_assert!(ejected, "should be ejected after request {}", i);
                        if i > at {
                            prop_assert_eq!(common::who(&res), "s", "no traffic to an ejected primary");
                        }
                    }
                    _ => prop_assert!(!ejected, "ejected too early at request {}", i),
                }
            }
            Ok(())
        })?;
    }
}
