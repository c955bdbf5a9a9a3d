#!/usr/bin/env python3
"""The Python baseline for the data-stages benchmark: what a one-off script does with
`json` and `pandas`, performing the same steps as `tigerflow`'s parse → chunk → split with
the default parameters:

1. parse: repair the `\\xNN` escapes Telegram Desktop writes, `json.load` the export, flatten
   text (string or entity array), resolve authors by `from_id` (latest name), write
   messages.parquet;
2. chunk: keep text-bearing non-service messages, sort by time, start a conversation after a
   60-minute pause, render `### Name: text`, pack windows of at most 2048 characters
   (cutting only messages longer than a window), drop windows with fewer than 2 messages,
   write dataset.jsonl and dataset.parquet;
3. split: 15 % test with the SplitMix64 Fisher-Yates shuffle of the `split` stage (seed 42),
   write train/test jsonl and parquet.

    python benches/data/reference.py path/to/result.json out_dir/

Needs pandas and pyarrow.
"""

import json
import os
import re
import sys

import pandas as pd

SESSION_GAP = 3600
MAX_CHARS = 2048
MIN_MESSAGES = 2
TEST_SIZE = 0.15
SEED = 42
M64 = (1 << 64) - 1


def flatten(text):
    if isinstance(text, str):
        return text
    return "".join(part if isinstance(part, str) else part.get("text", "") for part in text)


def parse(path):
    with open(path, "rb") as f:
        raw = f.read()
    raw = re.sub(rb"(?<!\\)((?:\\\\)*)\\x([0-9A-Fa-f]{2})", rb"\1\\u00\2", raw)
    export = json.loads(raw)
    del raw
    rows = []
    for m in export["messages"]:
        if m.get("type") == "unsupported":
            continue
        if "poll" in m:
            poll = m["poll"]
            text = flatten(poll.get("question", "")) + "".join(
                "\n- " + flatten(a.get("text", "")) for a in poll.get("answers", []))
        else:
            text = flatten(m.get("text", ""))
        if not text and m.get("media_type") == "sticker":
            text = m.get("sticker_emoji", "")
        service = m.get("type") == "service"
        rows.append({
            "message_id": m["id"],
            "unix_time": int(m["date_unixtime"]),
            "author_id": m.get("actor_id") if service else m.get("from_id"),
            "author": None if service else m.get("from"),
            "text": text,
            "kind": "service" if service else "text",
        })
    del export
    df = pd.DataFrame(rows)
    latest = df.dropna(subset=["author"]).groupby("author_id")["author"].last()
    df["author"] = df["author_id"].map(latest).fillna("Deleted Account")
    return df


def split_long(text, budget):
    pieces = []
    while len(text) > budget:
        window = text[:budget]
        cut = window.rfind(" ")
        cut = cut + 1 if cut >= budget // 2 else budget
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def chunk(df):
    df = df[(df["kind"] != "service") & (df["text"].str.strip().str.len() > 0)]
    df = df.sort_values(["unix_time", "message_id"], kind="stable")
    df["session"] = (df["unix_time"].diff() > SESSION_GAP).cumsum()
    df["rendered"] = "### " + df["author"] + ": " + df["text"]
    samples = []
    for session, group in df.groupby("session", sort=True):
        windows = []
        current = None
        for turn, rendered in enumerate(group["rendered"]):
            pieces = split_long(rendered, MAX_CHARS) if len(rendered) > MAX_CHARS else [rendered]
            for piece in pieces:
                if current is not None and len(current["text"]) + len(piece) <= MAX_CHARS:
                    current["text"] += piece
                    current["last"] = turn
                    continue
                if current is not None:
                    windows.append(current)
                current = {"text": piece, "first": turn, "last": turn}
        windows.append(current)
        times = group["unix_time"].tolist()
        for w in windows:
            if w["last"] - w["first"] + 1 >= MIN_MESSAGES:
                samples.append({"text": w["text"], "session": int(session),
                                "first_unix_time": times[w["first"]]})
    return pd.DataFrame(samples)


def splitmix_shuffle(items, seed):
    state = seed
    for i in range(len(items) - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        j = z % (i + 1)
        items[i], items[j] = items[j], items[i]


def split(samples):
    n = len(samples)
    test_n = min(max(round(n * TEST_SIZE), 1), n - 1)
    order = samples.sort_values("first_unix_time", kind="stable").index.tolist()
    splitmix_shuffle(order, SEED)
    return samples.loc[order[: n - test_n]], samples.loc[order[n - test_n:]]


def write(df, out, name):
    df[["text"]].to_json(os.path.join(out, name + ".jsonl"), orient="records", lines=True, force_ascii=False)
    df.to_parquet(os.path.join(out, name + ".parquet"))


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    messages = parse(src)
    messages.to_parquet(os.path.join(out, "messages.parquet"))
    samples = chunk(messages)
    write(samples, out, "dataset")
    train, test = split(samples)
    write(train, out, "train")
    write(test, out, "test")
    print(f"{len(messages)} messages, {len(samples)} samples, {len(train)} train, {len(test)} test")


if __name__ == "__main__":
    main()
