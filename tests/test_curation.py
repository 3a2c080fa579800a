"""Curation on h: nearest images, near duplicates, and which images to label next
(``simclrv2.curation``, ``simclrv2 neighbours``, ``simclrv2 suggest-labels``)."""

import csv

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from simclrv2 import curation
from simclrv2.cli import main
from simclrv2.data import ImageDataset, indices_from_names, load_indices
from simclrv2.export import ExportedModel, save_exported
from simclrv2.models import LinearClassifier, build_encoder
from simclrv2.runtime import Runtime
from simclrv2.visualize import GAP, ORIGINALS_GAP

CPU = Runtime(torch.device("cpu"), None, channels_last=False)
ORIGINAL, COPY = 3, 40  # the copy of image 3, one pixel changed, is the last image


def planted() -> ImageDataset:
    """40 random 28 px grey images and a copy of image 3 with one pixel changed, named 000.png..."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=generator)
    copy = images[ORIGINAL].clone()
    copy[0, 14, 14] = 255 - copy[0, 14, 14]
    images = torch.cat([images, copy[None]])
    return ImageDataset(images, names=[f"{i:03d}.png" for i in range(len(images))])


def tiny_model(classes: int = 0) -> ExportedModel:
    torch.manual_seed(0)
    # every residual branch on at initialisation: random images then lie 100x farther apart in h
    # than an image and its one-pixel copy (zero-initialised, all lie within 2e-4 of cosine 1)
    encoder = build_encoder(
        "r18_0.125x_sk0", image_size=28, in_channels=1, zero_init_residual=False
    )
    classifier = LinearClassifier(encoder.out_dim, classes) if classes else None
    return ExportedModel(encoder.eval(), classifier=classifier)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The planted images as a folder of PNGs, and two saved models: encoder only, and with a
    classifier."""
    root = tmp_path_factory.mktemp("curation")
    data = planted()
    (root / "images").mkdir()
    for name, image in zip(data.names, data.images):
        Image.fromarray(image[0].numpy(), mode="L").save(root / "images" / name)
    save_exported(tiny_model(), root / "encoder")
    save_exported(tiny_model(classes=4), root / "classifier")
    return root


def features(data: ImageDataset) -> torch.Tensor:
    model = tiny_model()
    return curation.embed_normalised(model.encoder, data, CPU)


def run(argv, capsys) -> tuple[int, str]:
    code = main([str(item) for item in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2 and err.startswith("simclrv2: error: ") and err.count("\n") == 1, err
    assert all(word in err for word in words), err


# ----------------------------------------------------------------------------------------------
# Neighbours and duplicates


def test_an_images_near_copy_is_its_first_neighbour():
    h = features(planted())
    cosine, index = curation.nearest(h[[ORIGINAL]], h, k=3)
    assert set(index[0, :2].tolist()) == {ORIGINAL, COPY}  # itself, then the copy (may tie)
    assert cosine[0, 0] >= cosine[0, 1] >= cosine[0, 2]
    _, index = curation.nearest(h, h, k=1, skip_self=True)
    assert index[ORIGINAL, 0] == COPY and index[COPY, 0] == ORIGINAL


def test_neighbours_command_writes_a_csv_and_a_png(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    query = workspace / "images" / f"{ORIGINAL:03d}.png"
    argv = ["neighbours", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run([*argv, "--query", query, "--k", 3, "--out", out], capsys)
    assert code == 0, err
    with open(out / "neighbours.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert {rows[0]["query"]} == {row["query"] for row in rows} == {query.name}
    assert {rows[0]["neighbour"], rows[1]["neighbour"]} == {"003.png", "040.png"}
    assert float(rows[0]["cosine"]) >= float(rows[1]["cosine"]) >= float(rows[2]["cosine"])
    tile = 28 * 4  # enlarged to at least 96 px
    with Image.open(out / "neighbours.png") as picture:
        picture.load()
        assert picture.size == (GAP + 4 * (tile + GAP) + ORIGINALS_GAP - GAP, GAP + tile + GAP)


def test_a_folder_of_queries_gives_each_its_neighbours(workspace, tmp_path, capsys):
    argv = ["neighbours", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run([*argv, "--query", workspace / "images", "--k", 2, "--out", tmp_path], capsys)
    assert code == 0, err
    with open(tmp_path / "neighbours.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 41 * 2
    first = {row["query"]: row["neighbour"] for row in rows if row["rank"] == "1"}
    second = {row["query"]: row["neighbour"] for row in rows if row["rank"] == "2"}
    assert {first["003.png"], second["003.png"]} == {"003.png", "040.png"}


def test_duplicates_find_the_planted_pair_first(workspace, tmp_path, capsys):
    h = features(planted())
    image, match, cosine = curation.duplicate_pairs(h, threshold=0.5, k=3)
    assert (image[0], match[0]) == (ORIGINAL, COPY)
    assert (image < match).all() and (cosine[:-1] >= cosine[1:]).all() and (cosine >= 0.5).all()
    pairs = list(zip(image.tolist(), match.tolist()))
    assert len(set(pairs)) == len(pairs)
    # against another set (a leak check): the copy alone finds its original in the first 40
    image, match, _ = curation.duplicate_pairs(h[:COPY], threshold=0.5, k=3, against=h[[COPY]])
    assert (image[0], match[0]) == (ORIGINAL, 0)

    argv = ["neighbours", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run([*argv, "--duplicates", "--threshold", 0.5, "--out", tmp_path], capsys)
    assert code == 0, err
    with open(tmp_path / "duplicates.csv") as file:
        rows = list(csv.DictReader(file))
    assert (rows[0]["image"], rows[0]["match"]) == ("003.png", "040.png")
    with Image.open(tmp_path / "duplicates.png") as picture:
        picture.load()
        assert picture.size[0] == GAP + 2 * (28 * 4 + GAP)


def brute_force(queries, bank, k, skip_self=False):
    similarity = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T
    if skip_self:
        similarity.fill_diagonal_(-torch.inf)
    return similarity.topk(k, dim=1)


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 37, 100, None])
def test_chunked_search_equals_the_full_matrix(chunk):
    generator = torch.Generator().manual_seed(1)
    bank = F.normalize(torch.randn(37, 16, generator=generator), dim=1)
    queries = F.normalize(torch.randn(23, 16, generator=generator), dim=1)
    cosine, index = curation.nearest(queries, bank, 5, chunk=chunk)
    expected = brute_force(queries, bank, 5)
    assert torch.equal(index, expected.indices)
    torch.testing.assert_close(cosine, expected.values)
    cosine, index = curation.nearest(bank, bank, 4, skip_self=True, chunk=chunk)
    expected = brute_force(bank, bank, 4, skip_self=True)
    assert torch.equal(index, expected.indices)
    torch.testing.assert_close(cosine, expected.values)


# ----------------------------------------------------------------------------------------------
# Which images to label next


def kcenter_reference(features, n, labelled, first):
    """k-centre greedy written plainly: centres are the labelled images, then each pick; the next
    pick is the unpicked image farthest from its nearest centre."""
    centres = list(labelled) or [first]
    picks = [] if labelled else [first]
    while len(picks) < n:
        best, best_distance = None, -1.0
        for i in range(len(features)):
            if i in centres:
                continue
            distance = min(float(((features[i] - features[c]) ** 2).sum()) for c in centres)
            if distance > best_distance:
                best, best_distance = i, distance
        picks.append(best)
        centres.append(best)
    return picks


@pytest.mark.parametrize("labelled", [[], [5, 17, 30]])
def test_kcenter_picks_equal_the_plain_algorithm(labelled):
    generator = torch.Generator().manual_seed(2)
    h = F.normalize(torch.randn(60, 8, generator=generator), dim=1)
    picks = curation.kcenter_greedy(h, 12, torch.tensor(labelled, dtype=torch.int64), seed=7)
    first = int(torch.randint(60, (), generator=torch.Generator().manual_seed(7)))
    assert picks.tolist() == kcenter_reference(h, 12, labelled, first)


def test_least_confident_breaks_ties_by_the_seed():
    logits = torch.tensor([[5.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    labelled = torch.tensor([3])
    picks = curation.least_confident(logits, 3, labelled, seed=0)
    assert set(picks[:2].tolist()) == {1, 4} and picks[2] == 2  # 1 and 4 tie at 0.5
    orders = {tuple(curation.least_confident(logits, 2, labelled, s).tolist()) for s in range(20)}
    assert orders == {(1, 4), (4, 1)}
    assert torch.equal(picks, curation.least_confident(logits, 3, labelled, seed=0))


@pytest.mark.parametrize("method", ["kcenter", "uncertain"])
def test_suggest_labels_names_new_distinct_images_the_same_at_one_seed(
    method, workspace, tmp_path, capsys
):
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("001.png\n010.png\n003.png\n")
    model = workspace / ("classifier" if method == "uncertain" else "encoder")
    argv = ["suggest-labels", "--model", model, "--data", workspace / "images", "--n", 8]
    argv += ["--labelled", labelled, "--method", method, "--seed", 3]
    lists = []
    for name in ("first.txt", "second.txt"):
        code, err = run([*argv, "--out", tmp_path / name], capsys)
        assert code == 0, err
        lines = (tmp_path / name).read_text().splitlines()
        assert lines[0].startswith("# simclrv2 suggest-labels --method " + method)
        lists.append(lines[1:])
    assert lists[0] == lists[1]
    assert len(set(lists[0])) == 8 and not set(lists[0]) & {"001.png", "010.png", "003.png"}
    pool = planted()
    assert indices_from_names(pool, tmp_path / "first.txt").tolist() == [
        pool.names.index(name) for name in lists[0]
    ]


def test_suggestions_of_a_pool_without_names_are_an_index_file(tmp_path):
    pool = planted()
    pool.names = None
    model = tiny_model()
    picks = curation.suggest_labels(model, pool, CPU, 5, torch.tensor([0, 1]), seed=0)
    assert len(set(picks.tolist())) == 5 and not {0, 1} & set(picks.tolist())
    curation.save_suggestions(tmp_path / "next.txt", pool, picks, "kcenter")
    assert torch.equal(load_indices(tmp_path / "next.txt", size=len(pool)), picks)


# ----------------------------------------------------------------------------------------------
# Bad input: one line each


def test_more_suggestions_than_the_pool_holds(workspace, tmp_path, capsys):
    argv = ["suggest-labels", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run([*argv, "--n", 42, "--out", tmp_path / "next.txt"], capsys)
    assert_one_line_error(code, err, "--n 42", "41 unlabelled")
    assert not (tmp_path / "next.txt").exists()


def test_uncertain_needs_a_classifier(workspace, tmp_path, capsys):
    argv = ["suggest-labels", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run([*argv, "--n", 4, "--method", "uncertain", "--out", tmp_path / "x"], capsys)
    assert_one_line_error(code, err, "--method uncertain", "classifier")


def test_a_query_that_does_not_exist(workspace, tmp_path, capsys):
    argv = ["neighbours", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run([*argv, "--query", tmp_path / "missing.png", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "missing.png", "does not exist")
    assert not (tmp_path / "o").exists()


def test_other_bad_curation_input(workspace, tmp_path, capsys):
    argv = ["neighbours", "--model", workspace / "encoder", "--data", workspace / "images"]
    (tmp_path / "not-an-image.png").write_text("hello")
    code, err = run([*argv, "--query", tmp_path / "not-an-image.png", "--out", tmp_path], capsys)
    assert_one_line_error(code, err, "not-an-image.png", "none of the 1 images can be decoded")
    code, err = run(
        [*argv, "--query", tmp_path, "--against", "embedded", "--out", tmp_path], capsys
    )
    assert_one_line_error(code, err, "--duplicates")
    argv = ["suggest-labels", "--model", workspace / "encoder", "--data", workspace / "images"]
    code, err = run(
        [*argv, "--n", 2, "--labelled", tmp_path / "none.txt", "--out", tmp_path / "x"], capsys
    )
    assert_one_line_error(code, err, "--labelled", "not a file")
