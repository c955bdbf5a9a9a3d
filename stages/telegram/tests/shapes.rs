//! One test per message shape and per malformed input (telegram-format.md).

use tigerflow_telegram::{ChatSelector, ExportError, Kind, Message, parse_export};

fn single_chat(messages: &str) -> String {
    format!(r#"{{"name": "Grupo", "type": "private_group", "id": 77, "messages": [{messages}]}}"#)
}

fn parse(json: &str) -> Result<tigerflow_telegram::Export, ExportError> {
    parse_export(json.as_bytes(), &ChatSelector::default(), 0)
}

fn only(json: &str) -> Message {
    let export = parse(&single_chat(json)).unwrap();
    assert_eq!(export.messages.len(), 1, "{:?}", export.messages);
    export.messages.into_iter().next().unwrap()
}

const HEAD: &str = r#""id": 5, "type": "message", "date": "2024-01-01T10:00:00", "date_unixtime": "1704103200",
    "from": "Ana", "from_id": "user6087455328""#;

#[test]
fn plain_text() {
    let m = only(&format!(
        r#"{{{HEAD}, "text": "oi\ntudo bem?", "text_entities": [{{"type": "plain", "text": "oi\ntudo bem?"}}]}}"#
    ));
    assert_eq!(m.id, 5);
    assert_eq!(m.kind, Kind::Text);
    assert_eq!(m.unix_time, 1_704_103_200);
    assert_eq!(m.author_id.as_deref(), Some("user6087455328"));
    assert_eq!(m.author_name.as_deref(), Some("Ana"));
    assert_eq!(m.text, "oi\ntudo bem?");
}

#[test]
fn entity_arrays_are_flattened() {
    let m = only(&format!(
        r#"{{{HEAD}, "text": [{{"type": "bold", "text": "Olha"}}, " isso ", {{"type": "text_link", "text": "aqui", "href": "https://x.org"}}, ""]}}"#
    ));
    assert_eq!(m.text, "Olha isso aqui");
}

#[test]
fn service_and_unsupported_messages_are_kept_out_of_text_and_counted() {
    let export = parse(&single_chat(
        r#"{"id": 1, "type": "service", "date": "2024-01-01T10:00:00", "date_unixtime": "1704103200",
            "actor": "Ana", "actor_id": "user1", "action": "pin_message", "message_id": 9, "text": "", "text_entities": []},
           {"id": 2, "type": "unsupported"},
           {"id": 3, "type": "service", "date_unixtime": "1704103201", "action": "send_payment", "text": ""}"#,
    ))
    .unwrap();
    assert_eq!(export.messages.len(), 2);
    assert!(export.messages.iter().all(|m| m.kind == Kind::Service));
    assert_eq!(export.messages[0].author_id.as_deref(), Some("user1"));
    assert_eq!(export.messages[0].detail.as_deref(), Some("pin_message"));
    assert_eq!(export.messages[1].author_id, None);
    assert_eq!(export.stats.unsupported, 1);
    assert_eq!(export.stats.by_kind["service"], 2);
}

#[test]
fn media_with_and_without_caption() {
    let export = parse(&single_chat(&format!(
        r#"{{{HEAD}, "photo": "photos/photo_1.jpg", "width": 1, "height": 1, "text": "a praia hoje"}},
           {{"id": 6, "type": "message", "date_unixtime": "1704103201", "from": "Ana", "from_id": "user6087455328",
            "file": "(File not included. Change data exporting settings to download.)", "media_type": "voice_message", "text": ""}},
           {{"id": 7, "type": "message", "date_unixtime": "1704103202", "from": "Ana", "from_id": "user6087455328",
            "file": "stickers/s.webp", "media_type": "sticker", "sticker_emoji": "😂", "text": ""}}"#
    )))
    .unwrap();
    let m = &export.messages;
    assert_eq!(
        (m[0].kind, m[0].text.as_str(), m[0].detail.as_deref()),
        (Kind::Media, "a praia hoje", Some("photo"))
    );
    assert_eq!(
        (m[1].kind, m[1].text.as_str(), m[1].detail.as_deref()),
        (Kind::Media, "", Some("voice_message"))
    );
    assert_eq!(m[2].text, "😂");
}

#[test]
fn forwards_replies_and_edits() {
    let m = only(&format!(
        r#"{{{HEAD}, "forwarded_from": null, "reply_to_message_id": 4, "edited": "2024-01-01T10:05:00",
            "edited_unixtime": "1704103500", "text": "fwd"}}"#
    ));
    assert!(m.forwarded);
    assert_eq!(m.reply_to, Some(4));
    assert_eq!(m.edited_unix_time, Some(1_704_103_500));
}

#[test]
fn polls_become_question_and_answers() {
    let m = only(
        r#"{"id": 1, "type": "message", "date_unixtime": "1", "from": "Ana", "from_id": "user1", "text": "",
            "poll": {"question": [{"type": "bold", "text": "Onde"}, "?"], "closed": false, "total_voters": 2,
                     "answers": [{"text": "praia", "voters": 1, "chosen": false}, {"text": "parque", "voters": 1, "chosen": true}]}}"#,
    );
    assert_eq!(m.kind, Kind::Poll);
    assert_eq!(m.text, "Onde?\n- praia\n- parque");
}

#[test]
fn authors_are_keyed_by_id_with_their_latest_name() {
    let export = parse(&single_chat(
        r#"{"id": 1, "type": "message", "date_unixtime": "1", "from": "Bruno", "from_id": "user2", "text": "a"},
           {"id": 2, "type": "message", "date_unixtime": "2", "from": null, "from_id": "user9", "text": "b"},
           {"id": 3, "type": "message", "date_unixtime": "3", "from": "Bruno Costa", "from_id": "user2", "text": "c"},
           {"id": 4, "type": "message", "date_unixtime": "4", "from": "Bruno Costa", "from_id": "user3", "text": "d"}"#,
    ))
    .unwrap();
    let names: Vec<_> = export
        .messages
        .iter()
        .map(|m| m.author_name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Bruno Costa",
            "Deleted Account",
            "Bruno Costa",
            "Bruno Costa"
        ]
    );
    assert_eq!(export.messages[3].author_id.as_deref(), Some("user3"));
    assert_eq!(export.stats.deleted_authors, 1);
}

#[test]
fn legacy_exports_have_integer_ids_and_local_dates() {
    let json = r#"{"name": "Old", "type": "personal_chat", "id": 4294967396, "messages": [
        {"id": 1, "type": "message", "date": "2019-03-01T12:00:00", "edited": "1970-01-01T01:00:00",
         "from": "Ana", "from_id": 123, "text": "velho"},
        {"id": 2, "type": "message", "date": "2020-11-01T12:00:00", "from": "Bia", "from_id": 8589934692, "text": "x"}]}"#;
    let export = parse_export(json.as_bytes(), &ChatSelector::default(), 3600).unwrap();
    let m = &export.messages;
    assert_eq!(m[0].author_id.as_deref(), Some("user123"));
    assert_eq!(m[0].unix_time, 1_551_441_600 - 3600);
    assert_eq!(
        m[0].edited_unix_time, None,
        "the local epoch means never edited"
    );
    assert_eq!(m[1].author_id.as_deref(), Some("chat100"));
    assert_eq!(export.stats.local_dates, 2);
    assert_eq!(export.chat.id, Some(4_294_967_396));
}

#[test]
fn x_escapes_are_repaired() {
    let m = only(&format!(r#"{{{HEAD}, "text": "form\x0Cfeed \\x41 kept"}}"#));
    assert_eq!(m.text, "form\u{c}feed \\x41 kept");
}

#[test]
fn oddities_are_counted_not_fatal() {
    let export = parse(&single_chat(&format!(
        r#"{{{HEAD}, "rich_message": {{"a": [1]}}, "reply_to_message_id": 999,
            "text": [{{"type": "sparkles", "text": "✨"}}], "reactions": [{{"type": "emoji", "count": 1, "emoji": "❤"}}]}},
           {{"id": -999202319, "type": "message", "date_unixtime": "1", "from": "Ana", "from_id": "user6087455328", "text": "migrated"}}"#
    )))
    .unwrap();
    assert_eq!(export.stats.unknown_fields["rich_message"], 1);
    assert_eq!(export.stats.unknown_entity_types["sparkles"], 1);
    assert_eq!(export.stats.dangling_replies, 1);
    assert_eq!(export.messages[1].id, -999_202_319);
    assert_eq!(export.messages[0].text, "✨");
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let json = format!(
        "\u{feff}{}",
        single_chat(&format!(r#"{{{HEAD}, "text": "x"}}"#))
    );
    let export = parse(&json).unwrap();
    assert!(export.stats.byte_order_mark);
}

fn account(chats: &str) -> String {
    format!(
        r#"{{"about": "x", "personal_information": {{"user_id": 1}}, "chats": {{"about": "y", "list": [{chats}]}}, "left_chats": {{"about": "z", "list": []}}}}"#
    )
}

fn dialog(id: i64, name: &str, text: &str) -> String {
    format!(
        r#"{{"name": "{name}", "type": "personal_chat", "id": {id}, "messages": [
            {{"id": 1, "type": "message", "date_unixtime": "1", "from": "Ana", "from_id": "user1", "text": "{text}"}}]}}"#
    )
}

#[test]
fn account_exports_select_by_id_or_unique_name() {
    let json = account(
        &[
            dialog(1, "Ana", "one"),
            dialog(2, "Bia", "two"),
            dialog(3, "Bia", "three"),
        ]
        .join(","),
    );
    let by_id = parse_export(
        json.as_bytes(),
        &ChatSelector {
            id: Some(2),
            name: None,
        },
        0,
    )
    .unwrap();
    assert_eq!(by_id.messages[0].text, "two");
    assert_eq!(by_id.chat.name.as_deref(), Some("Bia"));
    let by_name = parse_export(
        json.as_bytes(),
        &ChatSelector {
            id: None,
            name: Some("Ana".into()),
        },
        0,
    )
    .unwrap();
    assert_eq!(by_name.messages[0].text, "one");

    let err = parse_export(
        json.as_bytes(),
        &ChatSelector {
            id: None,
            name: Some("Bia".into()),
        },
        0,
    )
    .unwrap_err();
    assert!(
        matches!(err, ExportError::AmbiguousName { count: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("2 \"Bia\" (personal_chat, 1 messages)"),
        "{err}"
    );

    let err = parse(&json).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("this account export holds 3 chats"),
        "{err}"
    );

    let err = parse_export(
        json.as_bytes(),
        &ChatSelector {
            id: Some(42),
            name: None,
        },
        0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no chat with id 42 in this export; set `chat_id` to one of: 1 \"Ana\" (personal_chat, 1 messages), \
         2 \"Bia\" (personal_chat, 1 messages), 3 \"Bia\" (personal_chat, 1 messages)"
    );
}

#[test]
fn a_single_chat_export_is_checked_against_chat_id() {
    let json = single_chat(&format!(r#"{{{HEAD}, "text": "x"}}"#));
    let err = parse_export(
        json.as_bytes(),
        &ChatSelector {
            id: Some(1),
            name: None,
        },
        0,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("77 \"Grupo\" (private_group, 1 messages)"),
        "{err}"
    );
}

fn error(json: &[u8]) -> String {
    parse_export(json, &ChatSelector::default(), 0)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_empty_file() {
    assert!(error(b"").starts_with("the file is empty"));
    assert!(
        error(b"  \n").starts_with("the file is empty") || error(b"  \n").contains("truncated")
    );
}

#[test]
fn a_truncated_file() {
    let json = single_chat(&format!(r#"{{{HEAD}, "text": "x"}}"#));
    let cut = &json.as_bytes()[..json.len() - 10];
    let err = error(cut);
    assert!(err.starts_with("line 2, column "), "{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn messages_must_be_a_list() {
    let err = error(
        br#"{"name": "x", "id": 1,
 "messages": {"id": 1}}"#,
    );
    assert_eq!(
        err,
        "line 2, column 14: invalid type: map, expected a list of messages"
    );
}

#[test]
fn a_message_without_a_date() {
    let err = error(
        single_chat(
            r#"{"id": 12, "type": "message", "from": "A", "from_id": "user1", "text": "x"}"#,
        )
        .as_bytes(),
    );
    assert!(
        err.contains("message 12 has no `date` or `date_unixtime`"),
        "{err}"
    );
    assert!(err.starts_with("line 1, column "), "{err}");
}

#[test]
fn invalid_utf8() {
    let mut json = single_chat(&format!(r#"{{{HEAD}, "text": "AB"}}"#)).into_bytes();
    let at = json.windows(2).position(|w| w == b"AB").unwrap();
    json[at] = 0xFF;
    let err = error(&json);
    assert!(err.starts_with("line 2, column "), "{err}");
    assert!(err.contains("unicode"), "{err}");
}

#[test]
fn not_an_export() {
    assert!(error(b"{}").starts_with("no `messages` array and no `chats` list"));
    assert_eq!(
        error(b"[1]"),
        "line 1, column 1: invalid type: sequence, expected a JSON object (a Telegram Desktop export)"
    );
}
