import pytest

from stablegen.recipe import (DEFAULT_RECIPE, RecipeError, builtin_names, dump_recipe, load_recipe,
                              parse_overrides)


def test_every_builtin_validates_and_has_a_description():
    names = builtin_names()
    assert {"gan-ring8", "gan-grid25", "dcgan-digits", "dcgan-stacked", "cgan-digits"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.name == name and r.description


def test_default_recipe_is_the_quick_digits_gan():
    r = load_recipe(None)
    assert r.name == DEFAULT_RECIPE and r.data.name == "digits"


def test_overrides_are_parsed_as_yaml_scalars():
    ov = parse_overrides(["train.steps=10", "optim.g.lr=1e-4", "model.loss=ns", "model.spectral_norm=true",
                          "optim.d.betas=[0.0, 0.9]"])
    r = load_recipe("gan-ring8", ov)
    assert r.train.steps == 10 and r.optim["g"].lr == 1e-4 and r.model.loss == "ns"
    assert r.model.spectral_norm is True and r.optim["d"].betas == (0.0, 0.9)


@pytest.mark.parametrize("override, expected", [
    ("model.los=ns", "did you mean 'model.loss'"),
    ("trian.steps=3", "did you mean 'train'"),
    ("optim.g.lrr=1", "did you mean 'optim.g.lr'"),
    ("guard.max_rollback=1", "did you mean 'guard.max_rollbacks'"),
])
def test_unknown_keys_suggest_the_right_one(override, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe("gan-ring8", parse_overrides([override]))


@pytest.mark.parametrize("override, expected", [
    ("train.steps=abc", "train.steps.*'abc'.*integer"),
    ("model.loss=bce", "model.loss.*'bce'.*'ns', 'minimax', 'hinge', 'wgan', 'lsgan' or 'relativistic'"),
    ("model.family=foo", "model.family: got 'foo'; allowed: gan"),
    ("train.precision=fp8", "train.precision"),
    ("data.batch_size=0", "data.batch_size.*greater than or equal to 1"),
])
def test_wrong_values_name_key_given_and_allowed(override, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe("gan-ring8", parse_overrides([override]))


def test_unknown_recipe_name_suggests_close_match():
    with pytest.raises(RecipeError, match="did you mean 'gan-ring8'"):
        load_recipe("gan-ring9")


def test_bad_override_syntax():
    with pytest.raises(RecipeError, match="key=value"):
        parse_overrides(["train.steps"])


def test_recipe_files(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("model: {family: gan}\ndata: {name: moons}\ntrain: {steps: 7}\n")
    r = load_recipe(str(f))
    assert r.name == "mine" and r.train.steps == 7 and r.data.name == "moons"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml is not valid YAML"):
        load_recipe(str(bad))
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.yaml"))
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(str(notmap))


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe("cgan-digits", {"train.steps": 5})
    f = tmp_path / "recipe.yaml"
    f.write_text(dump_recipe(r))
    assert load_recipe(str(f)) == r.model_copy(update={"name": r.name})


def test_yaml_cannot_execute_code(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(f))
