"""Shared fixtures: tiny real models written to disk once per session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny models are overhead-bound: one thread is faster and immune to a busy second core.
# Tests on the default model raise it again (the `all_cores` fixture).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 2-layer Llama-style model (d_model 64, GQA 4/2 heads) saved as an HF directory."""
    from interp.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama", seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A 2-layer GPT-2-style model (d_model 64) saved as an HF directory."""
    from interp.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2", seed=0)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from interp.models.loading import load_model

    return load_model(tiny_llama_dir)


@pytest.fixture(scope="session")
def default_model():
    """The real default model (SmolLM2-135M-Instruct) on the torch backend."""
    from interp.models.loading import load_model

    return load_model()


@pytest.fixture()
def all_cores():
    """Use every core for the duration of a test on the default model."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    yield
    torch.set_num_threads(1)


@pytest.fixture()
def streamlit_caches():
    """Clear st.cache_data / st.cache_resource before and after the test: they outlive
    AppTest instances in one process."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture()
def explorer(monkeypatch, streamlit_caches):
    """Open a page of the Streamlit explorer under AppTest on a workspace:
    `explorer(ws, "SAEs", run="tiny")` runs the page at that URL path (None: Home) with those
    query parameters and returns the finished AppTest, failing on any exception. Caches are
    cleared before every page (see tests/app_workspace.py)."""
    import streamlit as st
    from app_workspace import open_page

    def open_(ws, url_path=None, **query):
        monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
        st.cache_data.clear()
        st.cache_resource.clear()
        return open_page(url_path, **query)

    return open_
