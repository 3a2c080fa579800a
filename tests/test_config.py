import pytest

from simclrv2.config import PRESETS, apply_overrides, config_from_dict, load_config, preset
from simclrv2.config.choices import DEMO as DEMO_CHOICES
from simclrv2.config.choices import Choice
from simclrv2.errors import UserError


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_round_trips(name):
    config = preset(name)
    assert config.preset == name
    assert config_from_dict(config.to_dict()) == config


def test_presets_carry_the_papers_numbers():
    v2, v1 = preset("imagenet-v2"), preset("cifar10-v1")
    assert (v2.pretrain.batch_size, v2.pretrain.lr_scaling, v2.pretrain.base_lr) == (
        4096,
        "sqrt",
        0.1,
    )
    assert (
        v2.pretrain.weight_decay,
        v2.pretrain.temperature,
        v2.model.head_layers,
        v2.model.head_input,
    ) == (1e-4, 0.1, 3, 1)
    assert (v2.pretrain.warmup, v2.pretrain.warmup_unit) == (0.05, "fraction")
    assert (
        v2.finetune.weight_decay,
        v2.finetune.warmup,
        v2.finetune.base_lr,
        v2.finetune.lr_scaling,
    ) == (0.0, 0.0, 0.005, "sqrt")
    assert (v1.pretrain.temperature, v1.augment.jitter_strength, v1.augment.blur) == (
        0.5,
        0.5,
        False,
    )
    assert (v1.model.head_layers, v1.model.head_input, v1.data.image_size) == (2, 0, 32)


def test_overrides_convert_types():
    config = load_config(
        "demo",
        overrides=["pretrain.epochs=3", "pretrain.base_lr=0.5", "finetune.label_fractions=[0.05,0.2]",
                   "data.source=none", "runtime.channels_last=false", "model.head_hidden_dim=64"],
    )  # fmt: skip
    assert config.pretrain.epochs == 3 and config.pretrain.base_lr == 0.5
    assert config.finetune.label_fractions == [0.05, 0.2]
    assert (
        config.data.source is None
        and config.runtime.channels_last is False
        and config.model.head_hidden_dim == 64
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.epoch=3", "did you mean 'pretrain.epochs'"),
        ("pretrain.epochs=three", "needs an integer"),
        ("pretrain.epochs=2.5", "needs an integer"),
        ("pretrain.optimizer=adam", "choose one of lars, sgd, adamw"),
        ("runtime.channels_last=maybe", "true or false"),
        ("pretrain.epochs=0", "must be positive"),
        ("finetune.label_fractions=[0.01,2]", "each must be in (0, 1]"),
        ("nonsense", "is not key=value"),
        ("augment.crop_min_area=0", "must be in (0, 1]"),
        ("pretrain.chunk_size=-1", "must be >= 0"),
        ("distill.base_lr=-0.1", "must be >= 0"),
        ("knn.k=0", "must be positive"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(UserError) as info:
        apply_overrides(preset("demo"), [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(UserError, match="did you mean 'demo'"):
        preset("dem")


def test_yaml_file_sets_values_and_may_pick_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: cifar10-v1\npretrain:\n  epochs: 7\nmodel: {arch: r18_1x_sk0}\n")
    config = load_config("demo", path, ["pretrain.batch_size=64"])
    assert (
        config.preset,
        config.pretrain.epochs,
        config.model.arch,
        config.pretrain.batch_size,
    ) == ("cifar10-v1", 7, "r18_1x_sk0", 64)
    assert config.pretrain.temperature == 0.5  # from the cifar10-v1 preset


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config("demo", tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pretrain: [epochs: 3\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("demo", broken)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("pretrain:\n  temprature: 0.2\n")
    with pytest.raises(UserError, match=r"did you mean 'pretrain\.temperature'"):
        load_config("demo", unknown)


def _setting(config, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def test_the_demo_holds_what_its_validation_sweeps_chose():
    demo = preset("demo")
    assert DEMO_CHOICES, "the demo's choices are recorded"
    for choice in DEMO_CHOICES:
        assert choice.before in choice.candidates
        assert all(len(numbers) == len(choice.measured) for numbers in choice.candidates.values())
        assert _setting(demo, choice.setting) == choice.chosen(), choice.setting


def test_choice_rules_ask_for_more_than_one_seeds_noise():
    rate = Choice("finetune.base_lr", ("a", "b"), {0.1: (70.0, 80.0), 0.2: (71.0, 80.5)}, 0.1)
    assert rate.best() == 0.2 and rate.chosen() == 0.1  # +0.75 on the mean: within the noise
    rate = Choice("finetune.base_lr", ("a", "b"), {0.1: (70.0, 80.0), 0.2: (72.0, 81.0)}, 0.1)
    assert rate.chosen() == 0.2  # +1.5
    budget = Choice("distill.epochs", ("a", "b"), {5: (69.5, 80.0), 10: (70.0, 80.2)}, 10, True)
    assert budget.chosen() == 5  # no number more than NOISE under the best: the cheaper
    budget = Choice("distill.epochs", ("a", "b"), {5: (75.0, 78.0), 10: (70.0, 80.2)}, 10, True)
    assert budget.score(5) > budget.score(10) and budget.best() == 5 and budget.chosen() == 5
    budget = Choice("pretrain.epochs", ("a", "b"), {5: (72.0, 78.0), 10: (70.0, 80.2)}, 10, True)
    assert budget.best() == 10 and budget.chosen() == 10  # b falls by 2.2: the cheaper one is out
