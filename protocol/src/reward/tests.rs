use super::*;
use serde_json::json;

fn block(transactions: Value) -> Value {
    json!({"index": 2, "transactions": transactions})
}

#[test]
fn solo_and_pplns_blocks_are_told_apart_by_their_rewards() {
    let solo = block(json!([
        {"sender": "a", "recipient": "b", "amount": 5},
        {"sender": "0", "recipient": "alice", "amount": 1}
    ]));
    let rewards = Rewards::of(&solo).expect("rewards");
    assert_eq!(
        (rewards.finder(), rewards.scheme(), rewards.to("alice")),
        ("alice", Scheme::Solo, 1)
    );
    let pplns = block(json!([
        {"sender": "0", "recipient": "bob", "amount": 600_000},
        {"sender": "0", "recipient": "carol", "amount": 399_999},
        {"sender": "0", "recipient": "alice", "amount": 1}
    ]));
    let rewards = Rewards::of(&pplns).expect("rewards");
    assert_eq!((rewards.finder(), rewards.scheme()), ("alice", Scheme::Pplns));
    assert_eq!((rewards.to("bob"), rewards.to("dave")), (600_000, 0));
    assert_eq!(Rewards::of(&block(json!([]))), None);
    assert_eq!(Rewards::of(&json!({"index": 1})), None);
}

#[test]
fn pplns_amounts_read_as_coins_with_six_decimals() {
    assert_eq!(Scheme::Pplns.coins(223_554_847), "223.554847");
    assert_eq!(Scheme::Pplns.coins(1), "0.000001");
    assert_eq!(Scheme::Pplns.coins(-1_500_000), "-1.500000");
    assert_eq!(Scheme::Solo.coins(229), "229");
}
