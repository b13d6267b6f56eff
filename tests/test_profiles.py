"""Profiles: which one is chosen, how roles resolve, and clear errors for broken files."""

import pytest
import torch

from models.profiles import ROOT, Limits, choose_default_profile, load_profile, weights_reachable


def test_default_is_full_with_cuda_and_reachable_weights_else_toy(monkeypatch):
    import huggingface_hub

    from models import profiles

    monkeypatch.delenv("CONDLAB_PROFILE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)  # nothing cached
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_default_profile().name == "toy"
    # A GPU but no weights (offline, not cached): still toy, and the page is told why.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    choice = choose_default_profile()
    assert choice.name == "toy" and "stable-diffusion-v1-5/stable-diffusion-v1-5" in choice.reason
    # A copy in the hub cache is enough.
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/cache/model_index.json")
    assert choose_default_profile().name == "full"
    monkeypatch.setenv("CONDLAB_PROFILE", "/some/where.toml")
    assert choose_default_profile().name == "/some/where.toml"
    monkeypatch.delenv("CONDLAB_PROFILE")
    monkeypatch.setattr(profiles, "toy_available", lambda: False)
    assert choose_default_profile().name == "full"


def test_weights_reachable(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    assert weights_reachable(str(tmp_path))  # a local folder
    assert not weights_reachable("org/not-cached-and-offline")
    assert not weights_reachable("not a repo id at all!")


def test_roles_resolve_relative_folders_and_keep_hub_ids(tmp_path):
    (tmp_path / "models" / "sd").mkdir(parents=True)
    path = tmp_path / "mine.toml"
    path.write_text('sd = "models/sd"\nclip = "openai/clip-vit-large-patch14"\n'
                    'ip_adapter = { source = "h94/IP-Adapter", subfolder = "models" }\n[limits]\nmax_steps = 7\n')
    profile = load_profile(path)
    assert profile.source("sd") == str(tmp_path / "models" / "sd")
    assert profile.source("clip") == "openai/clip-vit-large-patch14"
    assert profile.options("ip_adapter") == {"subfolder": "models"}
    assert profile.source("controlnet_canny") is None and not profile.has("controlnet_canny")
    assert profile.limits.max_steps == 7


def test_builtin_profiles_load():
    toy, full = load_profile("toy"), load_profile("full")
    assert toy.source("sd") == str(ROOT / "assets" / "toy" / "sd")
    assert full.source("sd") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert full.limits.max_pixels == 1024 * 1024 and full.limits.max_steps == 100
    # classifier guidance may use the ADM paper's 250 respaced steps; everything else stays at 100
    assert full.limits.guided_steps == 250 and toy.limits.guided_steps == toy.limits.max_steps


def test_cpu_threads_come_from_the_profile_and_only_touch_cpu_runtimes(tmp_path, monkeypatch):
    from models.runtime import pick_runtime, use_cpu_threads

    monkeypatch.delenv("CONDLAB_CPU_THREADS", raising=False)
    assert load_profile("toy").cpu_threads == 1 and load_profile("full").cpu_threads is None
    monkeypatch.setenv("CONDLAB_CPU_THREADS", "3")
    assert load_profile("toy").cpu_threads == 3
    monkeypatch.setenv("CONDLAB_CPU_THREADS", "-1")
    with pytest.raises(ValueError, match="cpu_threads"):
        _ = load_profile("toy").cpu_threads

    before = torch.get_num_threads()
    try:
        use_cpu_threads(pick_runtime("cpu"), 2)
        assert torch.get_num_threads() == 2 and pick_runtime("cpu").label == "cpu float32, 2 thread(s)"
        use_cpu_threads(pick_runtime("cuda"), 1)  # a CUDA runtime leaves the CPU thread pool alone
        assert torch.get_num_threads() == 2
        use_cpu_threads(pick_runtime("cpu"), None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_env_overrides_limits(monkeypatch):
    monkeypatch.setenv("CONDLAB_MAX_STEPS", "12")
    assert Limits.from_settings({"max_steps": 50}).max_steps == 12
    monkeypatch.setenv("CONDLAB_MAX_STEPS", "many")
    with pytest.raises(ValueError, match="max_steps"):
        Limits.from_settings({})


@pytest.mark.parametrize("text,match", [("sd = [1, 2]", "role 'sd'"), ("sd = ", "not valid TOML")])
def test_broken_profiles_are_value_errors(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_profile(path)


def test_unknown_profile_names_the_builtins():
    with pytest.raises(ValueError, match="full, toy"):
        load_profile("gpu-deluxe")


def test_the_page_says_which_profile_runs():
    import app

    demo = app.build_app(load_profile("toy"), "no CUDA GPU, so the small offline models")
    markdown = " ".join(str(getattr(b, "value", "")) for b in demo.blocks.values())
    assert "Profile: `toy`" in markdown and "picked because no CUDA GPU" in markdown
    assert f"cpu float32, {torch.get_num_threads()} thread(s)" in markdown


def test_every_tab_shows_only_the_selected_method_s_parameters():
    """One behaviour everywhere: a method's own parameters are hidden until it is selected (the default is CFG,
    which has none), on every tab that offers the registry's methods — the DiT section included."""
    import app
    from guidance.rules import METHODS

    demo = app.build_app(load_profile("toy"))
    labels = {p.label for method in METHODS.values() for p in method.params}
    shown = [b.label for b in demo.blocks.values() if getattr(b, "label", None) in labels and b.visible]
    offered = [b for b in demo.blocks.values() if getattr(b, "label", None) in labels]
    assert len(offered) >= 5 * len(labels) - 1  # five tabs' worth of method parameters were rendered
    assert not shown, shown
