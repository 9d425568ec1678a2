"""The store's conversations, checked against both backends: SQLite in a temp dir and a
real redis-server on 127.0.0.1 (the fixtures of test_store.py)."""

import time
import uuid

import pytest

from gateway_process import free_port
from racers import append_turns, in_processes
from store import ConversationFull, StoreError, open_store
from test_store import store, store_url  # noqa: F401 (fixtures)


def new_conversation():
    return f"conv_{uuid.uuid4().hex}"


def message(text, item_id=None):
    item = {"type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}
    return {"id": item_id, **item} if item_id else item


def texts(items):
    return [item["content"][0]["text"] for item in items]


def test_a_conversation_is_created_read_updated_and_deleted(store):
    cid = new_conversation()
    before = time.time()

    made = store.conversations.create(cid, "owner-a", {"topic": "x"}, [message("hi", "msg_1")])

    assert (made.id, made.owner, made.metadata, made.count) == (cid, "owner-a", {"topic": "x"}, 1)
    assert before <= made.created_at <= time.time() and store.conversations.get(cid) == made
    assert store.conversations.update(cid, {"topic": "y"}).metadata == {"topic": "y"}
    assert store.conversations.item(cid, "msg_1") == message("hi", "msg_1")
    assert store.conversations.delete(cid) is True
    assert store.conversations.get(cid) is None and store.conversations.item(cid, "msg_1") is None
    assert store.conversations.delete(cid) is False
    assert store.conversations.update(cid, {}) is None and store.conversations.add(cid, [], 9) is None


def test_items_keep_their_ids_unless_taken_and_pages_go_both_ways(store):
    cid = new_conversation()
    store.conversations.create(cid, None, {}, [message("a", "msg_a")])

    added = store.conversations.add(cid, [message("b", "msg_a"), message("c"), message("d")], 10)

    assert texts(added) == ["b", "c", "d"]
    assert added[0]["id"] != "msg_a" and all(i["id"].startswith("msg_") for i in added)
    everything, more = store.conversations.items(cid, None, "asc")
    assert texts(everything) == ["a", "b", "c", "d"] and not more
    assert len({i["id"] for i in everything}) == 4
    first, more = store.conversations.items(cid, 2, "desc")
    assert texts(first) == ["d", "c"] and more
    rest, more = store.conversations.items(cid, 2, "desc", after=first[-1]["id"])
    assert texts(rest) == ["b", "a"] and not more
    after_b, more = store.conversations.items(cid, 10, "asc", after=everything[1]["id"])
    assert texts(after_b) == ["c", "d"] and not more
    assert store.conversations.items(cid, 10, "asc", after="msg_nowhere") is None


def test_an_add_past_the_bound_adds_nothing(store):
    cid = new_conversation()
    store.conversations.create(cid, None, {}, [message("a")])

    with pytest.raises(ConversationFull):
        store.conversations.add(cid, [message("b"), message("c")], 2)

    assert store.conversations.get(cid).count == 1
    assert texts(store.conversations.add(cid, [message("b")], 2)) == ["b"]


def test_a_turn_is_appended_once_and_an_item_deleted_leaves_the_rest(store):
    cid, rid = new_conversation(), f"resp_{uuid.uuid4().hex}"
    store.conversations.create(cid, None, {}, [])

    assert store.conversations.append_turn(cid, rid, [message("q"), message("a")]) is True
    assert store.conversations.append_turn(cid, rid, [message("q"), message("a")]) is False

    items, _ = store.conversations.items(cid, None, "asc")
    assert texts(items) == ["q", "a"]
    left = store.conversations.delete_item(cid, items[0]["id"])
    assert left.count == 1 and texts(store.conversations.items(cid, None, "asc")[0]) == ["a"]
    assert store.conversations.delete_item(cid, items[0]["id"]) is None
    assert store.conversations.append_turn(new_conversation(), "resp_x", [message("q")]) is False


def test_a_conversation_expires_after_its_last_change(store_url):
    store = open_store(store_url, ttl=60, conversation_ttl=1)
    kept, left = new_conversation(), new_conversation()
    store.conversations.create(kept, None, {}, [message("a", "msg_x")])
    store.conversations.create(left, None, {}, [])
    time.sleep(0.7)
    store.conversations.add(kept, [message("b")], 10)  # a change: another second
    time.sleep(0.5)

    assert store.conversations.get(left) is None
    assert store.conversations.get(kept).count == 2
    time.sleep(1.1)
    assert store.conversations.get(kept) is None and store.conversations.item(kept, "msg_x") is None


def test_turns_from_processes_at_once_are_all_kept_whole_and_once(store, store_url):
    """Four processes append 25 turns of 5 items each to one conversation: 500 items, no
    item lost or doubled, and each turn's items together, in order."""
    cid = new_conversation()
    store.conversations.create(cid, None, {}, [])
    done = in_processes(append_turns, [(store_url, cid, worker, 25) for worker in range(4)])
    assert sorted(done) == [0, 1, 2, 3]

    items, _ = store.conversations.items(cid, None, "asc")
    names = texts(items)
    assert len(names) == len(set(names)) == 500 and store.conversations.get(cid).count == 500
    for start in range(0, 500, 5):
        turn = names[start:start + 5]
        prefix = turn[0].rsplit("-", 1)[0]
        assert turn == [f"{prefix}-{part}" for part in range(5)], turn


def test_an_unreachable_redis_raises_store_error_for_conversations():
    conversations = open_store(f"redis://127.0.0.1:{free_port()}/0", ttl=60).conversations

    for call in (lambda: conversations.get("conv_x"),
                 lambda: conversations.create("conv_x", None, {}, []),
                 lambda: conversations.items("conv_x", 10, "asc"),
                 lambda: conversations.append_turn("conv_x", "resp_x", [])):
        with pytest.raises(StoreError):
            call()
