"""Recommendation: a user's history and top-K, items similar to an item, which users a new
(cold-start) item would reach, and the model's metrics against the baselines."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.common import domain_api, friendly_errors, page_header, pick_run, require, run_key

page_header("Recommendation", "Top-K recommendations on MovieLens-100K (research, non-commercial use), item similarity and cold start.")

run_dir = pick_run("recommendation")  # first: with no run, the page only explains the command that makes one
if run_dir is None:
    st.stop()
api = domain_api("recommendation")
if api is None or run_dir is None or not require(api, "load_recommender"):
    st.stop()
key = run_key(run_dir)


@st.cache_resource(show_spinner="Loading the recommender…", max_entries=2)
def recommender(k: str):
    return api.load_recommender(k.rsplit("@", 1)[0])


@st.cache_data(show_spinner=False)
def metrics(k: str) -> pd.DataFrame:
    return api.load_metrics(k.rsplit("@", 1)[0])


rec = None
with friendly_errors("Loading the recommender"):
    rec = recommender(key)
if rec is None:
    st.stop()


@st.cache_data(show_spinner=False)
def users(k: str) -> list:
    return list(recommender(k).users())


@st.cache_data(show_spinner=False)
def items(k: str) -> pd.DataFrame | None:
    """The catalogue (item_id, title, genres) when the recommender exposes one."""
    r = recommender(k)
    for name in ("items", "catalog", "catalogue"):
        if hasattr(r, name):
            got = getattr(r, name)
            got = got() if callable(got) else got
            return got if isinstance(got, pd.DataFrame) else pd.DataFrame({"item_id": list(got)})
    return None


def genres_of(cat: pd.DataFrame | None) -> list[str]:
    if hasattr(rec, "genres"):
        g = rec.genres() if callable(rec.genres) else rec.genres
        return sorted(g)
    if cat is None or "genres" not in cat:
        return []
    out: set[str] = set()
    for g in cat["genres"].dropna():
        out.update(g if isinstance(g, (list, tuple)) else [s.strip() for s in str(g).replace("|", ",").split(",") if s.strip()])
    return sorted(out)


def item_label(row) -> str:
    return f"{row['item_id']} · {row['title']}" if "title" in row and pd.notna(row["title"]) else str(row["item_id"])


tab_user, tab_item, tab_cold, tab_metrics = st.tabs(["User → top-K", "Item → similar items", "Cold start", "Metrics vs baselines"])

with tab_user:
    with friendly_errors("Recommending"):
        us = users(key)
        c1, c2 = st.columns([3, 1])
        user = c1.selectbox("User", us, key="rec_user")
        k = c2.slider("K", 5, 50, 10, key="rec_k")
        left, right = st.columns(2)
        with left:
            st.markdown(f"**History of user {user}**")
            hist = rec.history(user)
            st.dataframe(hist, hide_index=True, width="stretch")
            st.caption(f"{len(hist)} interactions")
        with right:
            st.markdown(f"**Top-{k} for user {user}**")
            top = rec.recommend(user, k=k)
            st.dataframe(top, hide_index=True, width="stretch")

with tab_item:
    with friendly_errors("Finding similar items"):
        cat = items(key)
        c1, c2 = st.columns([3, 1])
        if cat is not None and len(cat):
            by_label = {item_label(r): r["item_id"] for _, r in cat.iterrows()}
            item = by_label[c1.selectbox("Item", list(by_label), key="rec_item")]
        else:
            item = c1.text_input("Item id", value="1", key="rec_item_id")
        k_items = c2.slider("K", 5, 50, 10, key="rec_k_items")
        st.dataframe(rec.similar_items(item, k_items), hide_index=True, width="stretch")

with tab_cold:
    st.caption("A new item nobody has rated yet: the model places it from its text and genres alone.")
    with friendly_errors("Cold-start placement"):
        cat = items(key)
        c1, c2, c3 = st.columns([3, 3, 1])
        title = c1.text_input("Title", value="Space Station Rescue (2026)", key="rec_cold_title")
        genre_choices = genres_of(cat)
        if genre_choices:
            genres = c2.multiselect("Genres", genre_choices, default=[g for g in ("Action", "Sci-Fi") if g in genre_choices], key="rec_cold_genres")
        else:
            genres = [g.strip() for g in c2.text_input("Genres (comma separated)", value="Action, Sci-Fi", key="rec_cold_genres_text").split(",") if g.strip()]
        k_users = c3.slider("Users", 5, 100, 20, key="rec_cold_k")
        if not title.strip():
            st.warning("Type a title for the new item.")
        else:
            reached = rec.cold_start_item(title.strip(), list(genres), k_users=k_users)
            st.markdown(f"**The {len(reached)} users `{title.strip()}` would reach first**")
            st.dataframe(reached, hide_index=True, width="stretch")

with tab_metrics:
    if require(api, "load_metrics"):
        with friendly_errors("Loading the metrics"):
            m = metrics(key)
            if m is None or len(m) == 0:
                st.caption("This run recorded no evaluation metrics.")
            else:
                st.dataframe(m, hide_index=True, width="stretch")
