use super::*;
use serde_json::json;

fn entry() -> Entry {
    Entry::new(Actor::uid(0), "model.load", "resnet/3").detail(json!({"b": 1, "a": [1, "x"]}))
}

#[test]
fn a_sealed_record_reads_back_with_its_content_hash() {
    let r = Record::seal(1, 100, entry(), GENESIS.to_owned()).unwrap();
    let line = r.to_line().unwrap();
    let text = std::str::from_utf8(&line).unwrap();
    assert!(
        text.starts_with(
            r#"{"seq":1,"at":100,"actor":{"kind":"uid","id":"uid 0"},"action":"model.load""#
        ),
        "{text}"
    );
    let back = Record::parse(&line).unwrap();
    assert!(back.content_ok);
    assert_eq!(back.record, r);
}

#[test]
fn the_content_hash_covers_every_member_but_hash() {
    let r = Record::seal(1, 100, entry(), GENESIS.to_owned()).unwrap();
    let text = String::from_utf8(r.to_line().unwrap()).unwrap();
    let edited = text.replace("resnet/3", "resnet/4");
    assert!(!Record::parse(edited.as_bytes()).unwrap().content_ok);
    let added = text.replacen('{', r#"{"extra":true,"#, 1);
    assert!(!Record::parse(added.as_bytes()).unwrap().content_ok);
    // Member order and whitespace are not content.
    let spaced = text.replacen(r#""seq":1,"at":100"#, r#""at": 100, "seq": 1"#, 1);
    assert!(Record::parse(spaced.as_bytes()).unwrap().content_ok);
}

#[test]
fn canonical_json_sorts_keys_at_every_depth() {
    let mut out = Vec::new();
    canonical(
        &json!({"b": {"d": 1, "c": [true, null]}, "a": "\n"}),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, br#"{"a":"\n","b":{"c":[true,null],"d":1}}"#);
}

#[test]
fn outcome_and_actor_kind_are_snake_case() {
    let e = entry().outcome(Outcome::Error("no space".into()));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["outcome"], json!({"error": "no space"}));
    assert_eq!(v["actor"]["kind"], "uid");
    let ok = serde_json::to_value(entry()).unwrap();
    assert_eq!(ok["outcome"], "ok");
}

#[test]
fn bad_actions_and_secret_keys_are_refused() {
    for bad in ["", "Model.Load", "model load", ".model", "model."] {
        let e = Entry::new(Actor::system(), bad, "x");
        assert!(matches!(e.check(), Err(AuditError::Invalid(_))), "{bad:?}");
    }
    for key in ["secret", "api_secret", "Password", "token", "private_key"] {
        let e = entry().detail(json!({"ok": {"nested": [{key: "s3cr3t"}]}}));
        let err = e.check().unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    entry()
        .detail(json!({"key": "mobile-app", "tokens_per_day": 10}))
        .check()
        .unwrap();
}

#[test]
fn a_record_displays_on_one_line() {
    let r = Record::seal(5, 1005, entry(), GENESIS.to_owned()).unwrap();
    assert_eq!(
        r.to_string(),
        r#"seq 5 at 1005: uid 0: model.load resnet/3: ok {"a":[1,"x"],"b":1}"#
    );
    let k = Entry::new(Actor::key("mobile-app"), "key.revoke", "key mobile-app")
        .outcome(Outcome::Error("no such key".into()));
    let r = Record::seal(6, 1006, k, GENESIS.to_owned()).unwrap();
    assert_eq!(
        r.to_string(),
        "seq 6 at 1006: key mobile-app: key.revoke key mobile-app: error: no such key"
    );
}

#[test]
fn seq_zero_is_not_a_record() {
    let r = Record::seal(1, 1, entry(), GENESIS.to_owned()).unwrap();
    let text = String::from_utf8(r.to_line().unwrap()).unwrap();
    let zero = text.replacen(r#""seq":1"#, r#""seq":0"#, 1);
    assert!(Record::parse(zero.as_bytes()).is_err());
}
