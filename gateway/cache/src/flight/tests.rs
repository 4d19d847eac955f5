use super::*;

#[tokio::test]
async fn waiters_get_the_leaders_value() {
    let f: Flights<u32, u64> = Flights::new();
    let Role::Leader(lead) = f.join(1) else {
        panic!("first caller leads")
    };
    let Role::Waiter(w1) = f.join(1) else {
        panic!("second caller waits")
    };
    let Role::Waiter(w2) = f.join(1) else {
        panic!("third caller waits")
    };
    assert_eq!(f.waiting(&1), 2);
    // Another key is another flight.
    assert!(matches!(f.join(2), Role::Leader(_)));
    lead.complete(7);
    assert_eq!(w1.wait().await, Some(7));
    assert_eq!(w2.wait().await, Some(7));
    assert_eq!(f.in_flight(), 0);
}

#[tokio::test]
async fn a_dropped_leader_releases_its_waiters() {
    let f: Flights<u32, u64> = Flights::new();
    let Role::Leader(lead) = f.join(1) else {
        panic!("first caller leads")
    };
    let Role::Waiter(w) = f.join(1) else {
        panic!("second caller waits")
    };
    let waiting = tokio::spawn(w.wait());
    drop(lead);
    assert_eq!(waiting.await.unwrap(), None);
    assert_eq!(f.in_flight(), 0);
    assert!(
        matches!(f.join(1), Role::Leader(_)),
        "the next caller leads"
    );
}

#[tokio::test]
async fn a_late_joiner_still_sees_the_value() {
    let f: Flights<u32, u64> = Flights::new();
    let Role::Leader(lead) = f.join(1) else {
        panic!("first caller leads")
    };
    let Role::Waiter(w) = f.join(1) else {
        panic!("second caller waits")
    };
    lead.complete(3);
    assert_eq!(w.wait().await, Some(3));
}
