"""The config store on a real nats-server: atomic commits, conflicts, history, rollback, pruning."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.config.bad_documents import example
from tests.config.gen import generate
from tests.support.nats_server import NatsServer
from vgw.bus import Bus, Received
from vgw.config import ConfigDocument
from vgw.config.store import CHUNK_PREFIX, ConfigConflict, ConfigReader, ConfigStore, RevisionNotFound
from vgw.config.validate import load_document
from vgw.events import ConfigChanged


def doc_of(raw: dict[str, object]) -> ConfigDocument:
    return load_document(json.dumps(raw))


async def test_commit_read_conflict_history_rollback(bus: Bus) -> None:
    events: list[ConfigChanged] = []

    async def on_event(r: Received) -> None:
        assert isinstance(r.event, ConfigChanged)
        events.append(r.event)

    await bus.subscribe(on_event, types=[ConfigChanged])
    store = await ConfigStore(bus, "t_cfg").open()
    empty = await store.current()
    assert empty.revision == 0

    d1 = doc_of(example())
    r1 = await store.commit(d1, actor="alice", reason="first", expected_revision=0)
    assert (r1.revision, r1.committed) == (1, True)
    assert r1.diff.counts()["added"] > 0

    reader = await ConfigReader(bus, "t_cfg").open()
    cur = await reader.current()
    assert cur.revision == 1 and cur.document == d1
    assert cur.manifest is not None and cur.manifest.actor == "alice" and cur.manifest.reason == "first"

    # The same document again: nothing to commit, same revision.
    same = await store.commit(d1, actor="alice", expected_revision=1)
    assert (same.revision, same.committed) == (1, False) and same.diff.empty

    # A stale expected revision fails with the current revision.
    raw = example()
    raw["vips"][0]["services"][0]["backends"][0]["weight"] = 7
    d2 = doc_of(raw)
    with pytest.raises(ConfigConflict) as info:
        await store.commit(d2, actor="bob", expected_revision=0)
    assert info.value.current == 1
    r2 = await store.commit(d2, actor="bob", reason="weight", expected_revision=1)
    assert r2.revision == 2
    assert [e.path for e in r2.diff.entries] == ["services/www-http/backends/198.51.100.21:8080"]

    # Dry run: a diff, no revision.
    raw["vips"][0]["services"][0]["backends"][0]["weight"] = 9
    dry = await store.commit(doc_of(raw), actor="bob", dry_run=True)
    assert not dry.committed and dry.revision == 2 and not dry.diff.empty
    assert (await reader.current()).revision == 2

    hist = await store.history()
    assert [(m.revision, m.actor, m.reason) for m in hist] == [(2, "bob", "weight"), (1, "alice", "first")]

    rb = await store.rollback(1, actor="carol", reason="undo")
    assert rb.revision == 3 and rb.manifest is not None and rb.manifest.rolled_back_to == 1
    assert (await reader.current()).document == d1

    async with asyncio.timeout(5):
        while len(events) < 3:
            await asyncio.sleep(0.02)
    assert [(e.revision, e.action.value) for e in events] == [(1, "apply"), (2, "apply"), (3, "rollback")]
    assert events[2].rolled_back_to == 1 and events[1].changed == ["services/www-http/backends/198.51.100.21:8080"]

    with pytest.raises(RevisionNotFound):
        await store.rollback(99, actor="carol")


async def test_small_change_rewrites_one_chunk_and_values_stay_small(bus: Bus) -> None:
    store = await ConfigStore(bus, "t_cfg_big").open()
    raw = generate(2000, 10)
    d1 = doc_of(raw)
    r1 = await store.commit(d1, actor="t")
    m1 = r1.manifest
    assert m1 is not None and m1.shards > 8
    kv = await store.kv()
    sizes = []
    for h in m1.chunks:
        e = await kv.get(f"{CHUNK_PREFIX}{h}")
        assert e.value is not None
        sizes.append(len(e.value))
    assert max(sizes) < 512 * 1024, max(sizes)

    # Change one backend in a document derived from the current one.
    _, svc = d1.vips[3], d1.vips[3].services[2]
    backends = list(svc.backends)
    backends[4] = backends[4].model_copy(update={"state": "draining"})
    new_svc = svc.model_copy(update={"backends": backends})
    vip = d1.vips[3].model_copy(update={"services": [*d1.vips[3].services[:2], new_svc, *d1.vips[3].services[3:]]})
    d2 = d1.model_copy(update={"vips": [*d1.vips[:3], vip, *d1.vips[4:]]})
    r2 = await store.commit(d2, actor="t")
    m2 = r2.manifest
    assert m2 is not None
    assert sum(a != b for a, b in zip(m1.chunks, m2.chunks, strict=True)) == 1
    reader = await ConfigReader(bus, "t_cfg_big").open()
    got = await reader.current()
    assert got.document == d2


async def test_retention_prunes_history_and_gc_deletes_unreferenced_chunks(bus: Bus) -> None:
    store = await ConfigStore(bus, "t_cfg_prune", retention=3).open()
    raw = example()
    for w in range(1, 7):
        raw["vips"][0]["services"][0]["backends"][0]["weight"] = w
        await store.commit(doc_of(raw), actor="t")
    hist = await store.history(limit=10)
    assert [m.revision for m in hist] == [6, 5, 4]
    with pytest.raises(RevisionNotFound):
        await store.rollback(2, actor="t")
    deleted = await store.gc(grace_s=0)
    assert deleted >= 1
    # Every kept revision still loads completely.
    for m in hist:
        assert (await store.revision(m.revision)).document.vips[0].services[0].backends[0].weight == m.revision


async def test_concurrent_committers_one_wins(bus: Bus, nats_server: NatsServer) -> None:
    other = Bus({"servers": [nats_server.url]}, source="/t/2")
    await other.connect()
    try:
        a = await ConfigStore(bus, "t_cfg_race").open()
        b = await ConfigStore(other, "t_cfg_race").open()
        await a.commit(doc_of(example()), actor="setup", expected_revision=0)
        raw1, raw2 = example(), example()
        raw1["vips"][0]["services"][0]["backends"][0]["weight"] = 1
        raw2["vips"][0]["services"][0]["backends"][0]["weight"] = 2
        results = await asyncio.gather(
            a.commit(doc_of(raw1), actor="a", expected_revision=1),
            b.commit(doc_of(raw2), actor="b", expected_revision=1),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, ConfigConflict)]
        assert len(wins) == 1 and len(losses) == 1, results
        assert losses[0].current == 2
    finally:
        await other.close()


async def test_a_following_reader_matches_every_revision(bus: Bus) -> None:
    """The reader's incremental assembly (only changed chunks are re-read) equals the committed
    document through adds, removals, moves between VIPs, reorders and node/check changes."""
    import random

    rng = random.Random(7)
    store = await ConfigStore(bus, "t_cfg_follow").open()
    reader = await ConfigReader(bus, "t_cfg_follow").open()
    raw = generate(300, 3)
    for step in range(12):
        vips = raw["vips"]
        op = step % 6
        if op == 0:  # change one backend
            rng.choice(rng.choice(vips)["services"])["backends"][0]["weight"] = rng.randint(0, 500)
        elif op == 1:  # remove a service
            v = rng.choice([v for v in vips if len(v["services"]) > 1])
            v["services"].pop(rng.randrange(len(v["services"])))
        elif op == 2:  # move a service to another VIP (new port to stay unique)
            a, b = rng.sample([v for v in vips if len(v["services"]) > 1], 2)
            svc = a["services"].pop(0)
            svc["port"] = 1000 + step
            b["services"].append(svc)
        elif op == 3:  # reorder services of a VIP and the VIPs
            rng.shuffle(rng.choice(vips)["services"])
            rng.shuffle(vips)
            vips[0]["services"][0]["backends"][0]["weight"] = 1000 + step  # order alone is not a change
        elif op == 4:  # node and check changes
            raw["nodes"][0]["state"] = "isolated" if raw["nodes"][0].get("state", "active") == "active" else "active"
            raw["health_checks"][0]["rise"] = 1 + step
        else:  # remove a VIP, add a new one
            vips.pop(rng.randrange(len(vips)))
            vips.append(
                {
                    "address": f"198.18.200.{step}",
                    "cluster": "c0",
                    "services": [
                        {"name": f"new{step}", "port": 80, "backends": [{"address": "198.19.9.9", "port": 80}]}
                    ],
                }
            )
        d = doc_of(raw)
        r = await store.commit(d, actor="t")
        assert r.committed, step
        got = await reader.current()
        assert got.revision == r.revision
        assert got.document == d, step
        assert got.document.model_dump_json() == d.model_dump_json(), step


async def test_a_follower_refuses_a_stored_revision_that_fails_validation(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revision written to the bucket without the config service's validation (a rogue or buggy
    writer) is skipped by followers, which keep the last good revision and count it."""
    import vgw.config.store as store_module
    from vgw import metrics

    store = await ConfigStore(bus, "t_cfg_rogue").open()
    good = doc_of(example())
    await store.commit(good, actor="t")
    raw = example()
    raw["nodes"][0]["cluster"] = "mars"  # structurally valid, but names a cluster that does not exist
    with monkeypatch.context() as m:
        m.setattr(store_module, "semantic_issues", lambda _doc: [])
        bad = await store.commit(ConfigDocument.model_validate(raw), actor="rogue")
    assert bad.committed

    rejected = metrics.CONFIG_REVISIONS_REJECTED._value.get()
    reader = await ConfigReader(bus, "t_cfg_rogue").open()
    seen = reader.watch()
    fixed = example()
    fixed["vips"][0]["services"][0]["backends"][0]["weight"] = 9
    # The follower must meet the rogue revision as the head and refuse it before a good one
    # exists: only then commit the fix (committed at once, the follower could skip straight to it).
    first_task = asyncio.get_running_loop().create_task(asyncio.wait_for(anext(seen), 10))
    deadline = asyncio.get_running_loop().time() + 10
    while metrics.CONFIG_REVISIONS_REJECTED._value.get() < rejected + 1:
        assert asyncio.get_running_loop().time() < deadline, "the follower never refused the rogue revision"
        assert not first_task.done(), first_task
        await asyncio.sleep(0.01)
    await store.commit(doc_of(fixed), actor="t")
    first = await first_task
    assert first.revision == bad.revision + 1 and first.document == doc_of(fixed)
    assert metrics.CONFIG_REVISIONS_REJECTED._value.get() == rejected + 1
    await seen.aclose()


async def test_a_followers_incremental_recheck_finds_what_a_full_check_finds(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Followers re-check each revision with a memo of what passed before (unchanged VIP and service
    objects are skipped). Through changes that break and mend the document -- in a changed VIP, and
    in what the unchanged ones depend on -- the memo finds exactly the issues of a full check."""
    import copy

    import vgw.config.store as store_module
    from vgw.config.validate import CheckMemo, semantic_issues

    monkeypatch.setattr(store_module, "semantic_issues", lambda _doc, _memo=None: [])  # a writer that lets all in
    store = await ConfigStore(bus, "t_cfg_memo").open()
    reader = await ConfigReader(bus, "t_cfg_memo").open()
    memo = CheckMemo()
    base = generate(200, 3)
    steps: list[tuple[str, dict[str, object]]] = [("valid", base)]

    def variant(name: str, change: object) -> None:
        raw = copy.deepcopy(base)
        change(raw)  # type: ignore[operator]
        steps.append((name, raw))
        steps.append((f"{name} mended", copy.deepcopy(base)))

    def vip_is_backend(raw: dict[str, object]) -> None:
        # (a duplicate service name cannot be stored at all: records are keyed by name)
        raw["vips"][5]["address"] = raw["vips"][1]["services"][2]["backends"][0]["address"]  # type: ignore[index]

    def check_gone(raw: dict[str, object]) -> None:
        raw["health_checks"][0]["name"] = "renamed"  # type: ignore[index]

    def lip_is_backend(raw: dict[str, object]) -> None:
        raw["nodes"][0]["lip_pool"] = [raw["vips"][3]["services"][1]["backends"][0]["address"]]  # type: ignore[index]

    def bad_table(raw: dict[str, object]) -> None:
        raw["vips"][7]["services"][0]["maglev_table_size"] = 65536  # type: ignore[index]  # not a prime

    def unknown_cluster(raw: dict[str, object]) -> None:
        raw["clusters"].append({"name": "extra"})  # type: ignore[attr-defined]
        raw["vips"][2]["cluster"] = "nowhere"  # type: ignore[index]

    for name, change in [
        ("a new VIP address is a backend of an unchanged VIP", vip_is_backend),
        ("health check renamed", check_gone),
        ("LIP equal to a backend of an unchanged VIP", lip_is_backend),
        ("a service's Maglev table size", bad_table),
        ("unknown cluster", unknown_cluster),
    ]:
        variant(name, change)
    found_some = 0
    for name, raw in steps:
        r = await store.commit(ConfigDocument.model_validate(raw), actor="t")
        got = await reader.current()
        assert got.revision == r.revision
        full = semantic_issues(got.document)
        assert semantic_issues(got.document, memo) == full, name
        assert bool(full) == (name != "valid" and not name.endswith("mended")), (name, full)
        found_some += bool(full)
    assert found_some == 5


async def test_a_one_backend_change_leaves_every_other_vip_object_as_it_was(bus: Bus) -> None:
    """The records of a chunk come back re-decoded when one of them changes; the reader keeps the
    old objects of those that are equal, so only the changed VIP is new (what the followers'
    re-check and the shim's diff pay for)."""
    store = await ConfigStore(bus, "t_cfg_reuse").open()
    reader = await ConfigReader(bus, "t_cfg_reuse").open()
    raw = generate(600, 3)
    await store.commit(doc_of(raw), actor="t")
    before = (await reader.current()).document
    raw["vips"][7]["services"][1]["backends"][0]["weight"] = 3
    await store.commit(doc_of(raw), actor="t")
    after = (await reader.current()).document
    assert after == doc_of(raw)
    new = [i for i, (a, b) in enumerate(zip(before.vips, after.vips, strict=True)) if a is not b]
    assert new == [7]
