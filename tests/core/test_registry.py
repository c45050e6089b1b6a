"""core.registry: the one name -> builder registry the domains' model registries are built on."""

import pytest

from core.registry import Registry


class UnknownThing(KeyError):
    pass


def test_register_lookup_and_clear_unknown_name():
    reg = Registry("toy model", error=UnknownThing)
    build = reg.register("a", lambda: 1)
    assert reg.lookup("a") is build and reg.names() == ["a"]
    with pytest.raises(UnknownThing, match="unknown toy model 'b'; registered: a"):
        reg.lookup("b")
    reg.register("a", build)  # the same entry again is fine (a module imported twice)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", lambda: 2)


def test_lazy_names_import_their_module_on_first_lookup():
    reg = Registry("toy model", lazy={"json-dumps": "json"})
    assert reg.names() == ["json-dumps"]
    with pytest.raises(KeyError):  # the module imports but does not register the name
        reg.lookup("json-dumps")


def test_every_domain_registry_is_a_core_registry():
    from domains.finance import model as finance_model
    from domains.medical import model as medical_model
    from domains.recommendation import model as rec_model

    assert set(medical_model.list_models()) >= {"unet", "segresnet", "effnet2d"}
    assert "tft" in finance_model.MODELS and isinstance(finance_model.MODELS, Registry)
    assert {"two-tower", "sasrec"} <= set(rec_model.registered_models())
