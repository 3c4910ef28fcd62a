"""The catalog (components read from their source, without importing them) agrees with the imported
registries, and `cltrain fit` refuses bad input without importing torch or Lightning."""
import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO
from cltrain import catalog


def _imported(registry):
    return catalog.imported(registry)


@pytest.mark.parametrize("registry", sorted(catalog.PACKAGES))
def test_the_catalog_lists_what_the_packages_register(registry):
    real = _imported(registry)
    test_only = {n for n in real.names() if n.startswith("_")}  # registered by tests at run time
    assert catalog.known_names(registry) == sorted(set(real.names()) - test_only)
    _, kind, key = catalog.REGISTRIES[registry]
    assert (real.kind, real.config_key) == (kind, key)


def _field_view(schema):
    return [(f.name, f.type, f.default, f.default_factory() if f.default_factory is not dataclasses.MISSING else None,
             dict(f.metadata)) for f in dataclasses.fields(schema)]


@pytest.mark.parametrize("registry", ["LEARNERS", "PLUGINS", "STREAMS", "MERGERS", "SOURCES"])
def test_configs_and_traits_read_from_source_equal_the_imported_classes(registry):
    real = _imported(registry)
    for name, entry in catalog.entries(registry).items():
        cls = real.get(name)
        assert entry.complete, name
        if getattr(cls, "Config", None) is None:
            assert entry.Config is None, name
        else:
            assert entry.Config.__name__ == cls.Config.__name__, name
            assert _field_view(entry.Config) == _field_view(cls.Config), name
        for trait in catalog.BASE_TRAITS:
            if hasattr(cls, trait):
                assert getattr(entry, trait) == getattr(cls, trait), (name, trait)


def test_base_traits_are_the_base_classes_defaults():
    from cltrain.learners.base import Learner
    from cltrain.plugins.base import Plugin

    for trait, value in catalog.BASE_TRAITS.items():
        for base in (Learner, Plugin):
            if hasattr(base, trait):
                assert getattr(base, trait) == value, (base, trait)


@pytest.mark.parametrize("overrides", [
    ["learner.name=tame"], ["learner.name=tame", "stream.presentation=task_agnostic", "learner.min_window=500"],
    ["learner.name=ewc", "learner.gamma=0"], ["plugins.detection.method=welch", "plugins.detection.window=5"],
    ["learner.name=tame", "stream.presentation=task_agnostic", "plugins.pruning.sparsity=0.5"],
    ["learner.name=ewx"], ["stream.name=spiral"], ["model.name=resnet"], ["plugins.detection.source=learner"],
    ["stream.scenario=task_incremental"], ["stream.name=rotated", "stream.first_identity=false"],
    ["learner.name=tame", "stream.presentation=task_agnostic", "trainer.devices=2", "trainer.strategy=ddp_spawn"],
])
def test_the_catalog_and_the_imported_components_refuse_alike(overrides):
    from cltrain.config import load_config
    from cltrain.errors import ConfigError
    from cltrain.experiment import resolve_components
    from cltrain.resolve import check_config

    cfg = load_config("bench/pmnist_naive", overrides)
    with pytest.raises(ConfigError) as light:
        check_config(cfg)
    with pytest.raises(ConfigError) as heavy:
        resolve_components(cfg)
    assert str(light.value) == str(heavy.value)


def test_a_refused_fit_and_list_never_import_torch_or_lightning():
    code = (
        "import sys\n"
        "from cltrain.cli import main\n"
        "assert main(['list']) == 0\n"
        "assert main(['fit', 'bench/pmnist_naive', 'learner.name=tame', 'plugins.replay.capacity=5']) == 2\n"
        "assert main(['fit', 'bench/pmnist_naive', 'learner.name=ewc', 'learner.lam=-1']) == 2\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'lightning_fabric') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
