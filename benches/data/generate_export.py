#!/usr/bin/env python3
"""Writes a synthetic Telegram Desktop single-chat JSON export (`result.json`).

Everything in it is invented: a group of friends chatting in Portuguese and English, with the
shapes a real export has (telegram-format.md): entity arrays and `text_entities`, service
messages, photos and stickers with and without captions, replies (some dangling), edits, polls,
forwards, a deleted account (`from: null`), a renamed member, `unsupported` messages and the
invalid `\\xNN` escapes Telegram Desktop writes for control characters.

    python3 benches/data/generate_export.py --messages 1500 --seed 7 > data/sample-export/result.json
    python3 benches/data/generate_export.py --messages 1000000 --seed 1 > /tmp/big/result.json

Only the standard library is used; the output is a pure function of the arguments.
"""

import argparse
import json
import random
import sys

CHAT_ID = 4815162342
START = 1_704_103_200  # 2024-01-01 10:00 UTC

# (from_id, names over time). The last one is a deleted account: `from` is null.
PEOPLE = [
    ("user1000001", ["Ana"]),
    ("user1000002", ["Bruno", "Bruno Costa"]),
    ("user1000003", ["Carla"]),
    ("user1000004", ["Dave"]),
    ("user6087455328", ["Inês"]),
    ("user1000006", [None]),
]

PLACES = ["na praia", "no parque", "lá em casa", "no bar do Zé", "no centro"]
FOODS = ["pizza", "churrasco", "sushi", "feijoada", "pastel"]
TIMES = ["às 19h", "às 20h", "depois do almoço", "amanhã cedo", "no sábado"]
MOVIES = ["Dune", "Oppenheimer", "Cidade de Deus", "Past Lives", "Aftersun"]
CITIES = ["Lisbon", "Porto", "Recife", "Berlin", "Salvador"]
TEAMS = ["Flamengo", "Benfica", "Porto", "Palmeiras", "Sporting"]

# Conversation threads: (speaker slot, text). Slots 0..2 are bound to random people.
THREADS = [
    [(0, "Bora comer {food} {time}?"), (1, "Bora! Onde?"), (0, "{place}, pode ser?"),
     (2, "Tô dentro 🙌"), (1, "Levo as bebidas"), (0, "Fechado então")],
    [(0, "Alguém viu o jogo do {team} ontem?"), (1, "Vi! Que golaço no final"),
     (2, "Perdi, tava trabalhando 😩"), (1, "Depois te mando os melhores momentos"),
     (0, "O juiz roubou descaradamente kkkk")],
    [(0, "Has anyone watched {movie}?"), (1, "Yes! Loved it"), (2, "Not yet, is it worth it?"),
     (1, "Totally, go see it on a big screen"), (0, "Let's go together this weekend?"),
     (2, "Count me in")],
    [(0, "I'm flying to {city} next month"), (1, "Nice! For work?"),
     (0, "Half work, half holiday"), (2, "Bring us something back 😄"),
     (0, "Deal. Any tips for {city}?"), (1, "Walk everywhere and eat at the market")],
    [(0, "Gente, alguém tem carregador de notebook pra emprestar?"), (1, "Tenho um USB-C"),
     (0, "Salvou meu dia, valeu!"), (1, "Passa aqui {time}")],
    [(0, "Bom dia pessoal ☀️"), (1, "Bom dia!"), (2, "Bom diaaa"),
     (0, "Quem vai {place} hoje?"), (2, "Eu vou, {time}")],
    [(0, "Did you finish the report?"), (1, "Almost, sending it {time}"),
     (0, "Great, thanks 🙏"), (1, "No worries")],
    [(0, "Que saudade de {food} da sua mãe"), (1, "Ela disse que vai fazer no domingo"),
     (2, "Me convida! 😂"), (1, "Claro, todo mundo convidado")],
    [(0, "Happy birthday {name}! 🎉🎂"), (1, "Parabéns!!! Muitas felicidades"),
     (2, "Feliz aniversário! Bora comemorar {place}"), (0, "Cake is on me")],
    [(0, "Choveu muito aí?"), (1, "Demais, a rua alagou"), (0, "Aqui também, fiquei preso no trânsito"),
     (2, "Fiquem em casa hoje, sério")],
]

ESCAPED = "\x0c"  # written as \x0C by the encoder below, like Telegram Desktop does


def text_value(text, rng):
    """`text` and `text_entities` for a message, sometimes with entities."""
    roll = rng.random()
    if roll < 0.06:
        url = "https://example.org/" + rng.choice(["foto", "mapa", "ingresso", "post"])
        parts = [text + " ", {"type": "link", "text": url}]
    elif roll < 0.10:
        words = text.split(" ", 1)
        parts = [{"type": "bold", "text": words[0]}] + ([" " + words[1]] if len(words) > 1 else [])
    elif roll < 0.12:
        parts = [{"type": "mention", "text": "@ana_b"}, " " + text]
    elif roll < 0.13:
        parts = [text + " ", {"type": "custom_emoji", "text": "🔥", "document_id": "(unavailable)"}, ""]
    else:
        return text, [{"type": "plain", "text": text}]
    entities = [p if isinstance(p, dict) else {"type": "plain", "text": p} for p in parts]
    return parts, entities


def encode(obj):
    """Compact-ish JSON like Telegram Desktop: UTF-8 kept, control chars as invalid \\xNN."""
    out = json.dumps(obj, ensure_ascii=False, indent=1)
    return out.replace("\\f", "\\x0C")


def slots(rng, people_names):
    """One set of slot values per thread, so that a conversation stays on one topic."""
    return dict(
        food=rng.choice(FOODS), time=rng.choice(TIMES), place=rng.choice(PLACES),
        movie=rng.choice(MOVIES), city=rng.choice(CITIES), team=rng.choice(TEAMS),
        name=rng.choice(people_names),
    )


def fill(template, rng, people_names):
    return template.format(**slots(rng, people_names))


def messages(count, rng):
    now = START
    next_id = 1
    emitted = 0
    recent_ids = []
    while emitted < count:
        # A session: one to three threads among three people, then a long pause.
        now += rng.choice([3, 5, 8, 20, 30]) * 3600 + rng.randrange(3600)
        # The deleted account only took part early on.
        cast = rng.sample(PEOPLE if emitted < count // 4 else PEOPLE[:-1], 3)
        for _ in range(rng.choice([1, 1, 2, 3])):
            values = slots(rng, [n for _, ns in PEOPLE for n in ns if n])
            for slot, template in rng.choice(THREADS):
                if emitted >= count:
                    return
                now += rng.randrange(5, 240)
                person_id, names = cast[slot]
                # Renamed people: the later name appears in the second half of the chat.
                name = names[-1] if emitted > count // 2 else names[0]
                text = template.format(**values)
                msg = {"id": next_id, "type": "message", "date": "", "date_unixtime": str(now)}
                roll = rng.random()
                if roll < 0.015:
                    msg = {"id": next_id, "type": "unsupported"}
                elif roll < 0.04:
                    msg.update(type="service", actor=name, actor_id=person_id,
                               action=rng.choice(["pin_message", "phone_call", "invite_members"]))
                    if msg["action"] == "pin_message" and recent_ids:
                        msg["message_id"] = rng.choice(recent_ids)
                    if msg["action"] == "phone_call":
                        msg["duration_seconds"] = rng.randrange(10, 900)
                    if msg["action"] == "invite_members":
                        msg["members"] = [rng.choice(PEOPLE)[1][0]]
                    msg["text"], msg["text_entities"] = "", []
                else:
                    msg["from"] = name
                    msg["from_id"] = person_id
                    if roll < 0.06:
                        msg["forwarded_from"] = rng.choice(["Notícias do Bairro", None])
                    if recent_ids and rng.random() < 0.12:
                        # Some replies point at messages that are not in the export.
                        msg["reply_to_message_id"] = rng.choice(recent_ids) if rng.random() < 0.9 else 1
                    if rng.random() < 0.05:
                        msg["edited"] = ""
                        msg["edited_unixtime"] = str(now + rng.randrange(10, 600))
                    kind = rng.random()
                    if kind < 0.05:
                        msg["photo"] = "(File not included. Change data exporting settings to download.)"
                        msg["width"], msg["height"] = 1280, 960
                        if rng.random() < 0.5:
                            text = ""
                    elif kind < 0.08:
                        msg["file"] = "(File not included. Change data exporting settings to download.)"
                        msg["file_name"] = "sticker.webp"
                        msg["media_type"] = "sticker"
                        msg["sticker_emoji"] = rng.choice(["😂", "👍", "❤", "🔥"])
                        msg["mime_type"] = "image/webp"
                        text = ""
                    elif kind < 0.09:
                        msg["poll"] = {
                            "question": fill("Onde vamos {time}?", rng, ["x"]),
                            "closed": False,
                            "total_voters": 3,
                            "answers": [{"text": p, "voters": rng.randrange(3), "chosen": False}
                                        for p in rng.sample(PLACES, 3)],
                        }
                        text = ""
                    elif kind < 0.092:
                        text = text + ESCAPED
                    if text:
                        msg["text"], msg["text_entities"] = text_value(text, rng)
                    else:
                        msg["text"], msg["text_entities"] = "", []
                    if rng.random() < 0.01:
                        msg["reactions"] = [{"type": "emoji", "count": 1, "emoji": "❤"}]
                if "date_unixtime" in msg:
                    msg["date"] = date_string(now)
                recent_ids = (recent_ids + [next_id])[-30:]
                next_id += rng.choice([1, 1, 1, 2, 5])
                emitted += 1
                yield msg


def date_string(unix):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout
    out.write('{\n "name": "Galera do Churrasco 🔥🍖",\n "type": "private_group",\n')
    out.write(f' "id": {CHAT_ID},\n "messages": [\n')
    first = True
    for msg in messages(args.messages, rng):
        if not first:
            out.write(",\n")
        first = False
        out.write("  " + encode(msg).replace("\n", "\n  "))
    out.write("\n ]\n}")


if __name__ == "__main__":
    main()
