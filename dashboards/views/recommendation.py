"""Recommendation: a user's history and top-K, items similar to an item, which users a new
(cold-start) item would reach, and the model's metrics against the baselines."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards.common import curves, friendly_errors, md_code, md_text, open_domain_page, page_header, run_path, runs_dir

page_header("Recommendation", "Top-K recommendations on MovieLens-100K (research, non-commercial use), item similarity and cold start.")


def import_api():
    from domains.recommendation import api
    return api


api, run_dir, key = open_domain_page("recommendation", import_api, prefer=lambda api, p: api.recommendation_run(p).has_model)  # the newest run with a model


@st.cache_resource(show_spinner="Loading the recommender…", max_entries=2)
def recommender(k: str) -> api.RecommenderView:
    return api.load_recommender(run_path(k))


# Every query is cached per (run, arguments): moving one control never recomputes the other tabs.
@st.cache_data(show_spinner=False, max_entries=64)
def history(k: str, user) -> pd.DataFrame:
    return recommender(k).history(user)


@st.cache_data(show_spinner=False, max_entries=64)
def top_k(k: str, user, n: int) -> pd.DataFrame:
    return recommender(k).recommend(user, k=n)


@st.cache_data(show_spinner="Explaining…", max_entries=64)
def because(k: str, user, n: int) -> pd.DataFrame:
    return api.because_you_watched(recommender(k), user, k=n, top=3)


@st.cache_data(show_spinner=False, max_entries=64)
def similar(k: str, item, n: int) -> pd.DataFrame:
    return recommender(k).similar_items(item, n)


@st.cache_data(show_spinner="Placing the new item…", max_entries=32)
def cold_start(k: str, title: str, genres: tuple[str, ...], n: int) -> pd.DataFrame:
    return recommender(k).cold_start_item(title, list(genres), k_users=n)


@st.cache_data(show_spinner=False)
def metrics(k: str) -> pd.DataFrame:
    return api.load_metrics(run_path(k))


@st.cache_data(show_spinner=False)
def report(k: str) -> api.TrainingReport:
    return api.training_report(run_path(k))


def bench_stamp(protocol: str) -> float:
    return api.seed_spread_stamp(runs_dir(), protocol)


@st.cache_data(show_spinner=False)
def seed_spread(root: str, protocol: str, stamp: float) -> api.SeedSpread:
    return api.seed_spread(root, protocol)


@st.cache_data(show_spinner=False)
def users(k: str) -> list:
    return list(recommender(k).users())


@st.cache_data(show_spinner=False)
def catalogue(k: str) -> pd.DataFrame:
    """The catalogue (item_id, title, genres, year, ...) of the run's Recommender."""
    return recommender(k).items_df.copy()


@st.cache_data(show_spinner=False)
def profiles(k: str) -> pd.DataFrame:
    return recommender(k).users_df.copy()


def genre_vocabulary(k: str) -> list[str]:
    """The model's own genre vocabulary (what its item tower was trained on)."""
    return api.genre_vocabulary(recommender(k))


def fallback_note(df: pd.DataFrame) -> None:
    if "fallback" in df and df["fallback"].any():
        reason = df.loc[df["fallback"].astype(bool), "reason"].iloc[0] if "reason" in df else "fallback"  # a fallback row's own reason
        st.info(f"Fallback: {md_text(reason)}.")


NO_RANK = "—"
NO_RANK_WHY = "why no rank"


def cold_start_ranks(reached: pd.DataFrame) -> pd.DataFrame:
    """The cold-start table as read: a user without training history is served the most popular items, a list the new
    item (no interaction yet) has no place in, so the api leaves its rank empty (``fallback``, ``reason``); here it reads
    '—' with the reason beside it, not an empty cell."""
    if not ("fallback" in reached and reached["fallback"].any() and "rank_in_user_list" in reached):
        return reached
    fb = reached["fallback"].astype(bool)
    rank = reached["rank_in_user_list"].map(lambda r: NO_RANK if pd.isna(r) else str(int(r)))
    why = reached["reason"].where(fb, "") if "reason" in reached else pd.Series(["fallback" if f else "" for f in fb], index=reached.index)
    return reached.assign(rank_in_user_list=rank, **{NO_RANK_WHY: why})


POPULARITY_LABEL = "popularity (training interactions)"


def show(df: pd.DataFrame) -> None:
    """A result table: model rows show their score; fallback rows (no score) show the item's
    popularity under its own label, never in the score column."""
    out = df.drop(columns=[c for c in ("fallback", "reason") if c in df], errors="ignore")
    pop = api.POPULARITY_COLUMN
    if pop in out and out[pop].isna().all():
        out = out.drop(columns=[pop])
    if "score" in out and pop in out and out["score"].isna().all():
        out = out.drop(columns=["score"])
    st.dataframe(out.rename(columns={pop: POPULARITY_LABEL}), hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn("score", format="%.3f", help="the model's score"),
                                POPULARITY_LABEL: st.column_config.NumberColumn(
                                    POPULARITY_LABEL, format="%d", help="how many training interactions the item has: a fallback ranking, not a model score")})


rec = None
with friendly_errors("Loading the recommender"):
    rec = recommender(key)
if rec is None:
    st.stop()

tab_user, tab_item, tab_cold, tab_metrics = st.tabs(["User → top-K", "Item → similar items", "Cold start", "Metrics vs baselines"])

with tab_user:
    with friendly_errors("Recommending"):
        us = users(key)
        c1, c0, c2 = st.columns([3, 2, 1])
        user = c1.selectbox("User", us, key="rec_user")
        typed = c0.text_input("…or any user id", key="rec_user_typed", help="a user the model has not seen gets the popularity fallback")
        if typed.strip():
            user = typed.strip()
        k = c2.slider("K", 5, 50, 10, key="rec_k")
        prof = profiles(key)
        if prof is not None and "user_id" in prof:
            row = prof[prof["user_id"].astype(str) == str(user)]
            if len(row):
                st.caption("Profile · " + " · ".join(f"{md_text(c)}: {md_text(v)}" for c, v in row.iloc[0].items() if c != "user_id"))
        left, right = st.columns(2)
        with left:
            hist = history(key, user)
            st.markdown(f"**History of user {md_text(user)}** ({len(hist)} training interactions)")
            show(hist)
        with right:
            top = top_k(key, user, k)
            st.markdown(f"**Top-{k} for user {md_text(user)}** (items already seen are excluded)")
            fallback_note(top)
            why = pd.DataFrame()
            if not ("fallback" in top and top["fallback"].any()):
                with friendly_errors("Explaining the recommendations"):
                    why = because(key, user, k)
            if not why.empty:  # issue 17.3: the history items that contribute most to each recommendation
                summary = api.because_summary(why)
                top = top.assign(**{"because you watched": top["item_id"].map(summary).fillna("")})
            show(top)
            if not why.empty:
                proxy = (why["method"] == api.ITEM_SIMILARITY).any()
                with st.expander("Because you watched: contributions" + (" (proxy: item similarity)" if proxy else "")):
                    st.caption("Each recommendation's score minus its score with that history item left out of the user tower "
                               "(positive: the item pushed the recommendation up)." if not proxy else
                               "This model does not read the history, so these are the history items most similar to each "
                               "recommendation in the item tower's space — a proxy, not an attribution.")
                    st.dataframe(why.rename(columns={"title": "recommended", "score": "its score", "because_title": "because you watched"}),
                                 hide_index=True, width="stretch")
        if "genres" in hist and "genres" in top and len(hist):
            def genre_share(df: pd.DataFrame) -> pd.Series:
                g = df["genres"].map(lambda v: v if isinstance(v, (list, tuple)) else [s.strip() for s in str(v).split(",") if s.strip()])
                return g.explode().value_counts(normalize=True)

            mix = pd.DataFrame({"history": genre_share(hist), "top-K": genre_share(top)}).fillna(0).sort_values("history", ascending=False)
            fig = go.Figure([go.Bar(name=c, x=mix.index, y=mix[c]) for c in mix.columns])
            fig.update_layout(title="Genre mix: history vs recommendations", barmode="group", height=300, margin=dict(l=10, r=10, t=40, b=10),
                              yaxis_tickformat=".0%", legend=dict(orientation="h", y=-0.3))
            st.plotly_chart(fig, width="stretch", key="rec_genre_mix")

with tab_item:
    with friendly_errors("Finding similar items"):
        cat = catalogue(key)
        c1, c2 = st.columns([3, 1])
        if cat is not None and "title" in cat:
            labels = [f"{i} · {t}" for i, t in zip(cat["item_id"], cat["title"])]
            by_label = dict(zip(labels, cat["item_id"]))
            item = by_label[c1.selectbox("Item", labels, key="rec_item")]
        else:
            item = c1.text_input("Item id", value="1", key="rec_item_id")
        n_items = c2.slider("K", 5, 50, 10, key="rec_k_items")
        if cat is not None and "title" in cat:
            me = cat[cat["item_id"] == item].iloc[0]
            genres = me["genres"] if "genres" in me else ""
            st.caption(f"**{md_text(me['title'])}** · {md_text(', '.join(genres) if isinstance(genres, (list, tuple)) else genres)}")
        show(similar(key, item, n_items))

with tab_cold:
    placement = api.cold_start_inputs(rec)  # what this run's item tower reads of a new item (title text, genres), if anything
    st.caption(f"A new item nobody has rated yet: {placement.describe()}")
    if placement.placeable:  # else the caption says why no new item can be placed: no inputs, no refusal
        with friendly_errors("Cold-start placement"):
            c1, c2, c3 = st.columns([3, 3, 1])
            title = c1.text_input("Title", value="Space Station Rescue", key="rec_cold_title")
            vocab = genre_vocabulary(key)
            if vocab:
                genres = c2.multiselect("Genres", vocab, default=[g for g in ("Action", "Sci-Fi") if g in vocab], key="rec_cold_genres")
            else:  # items trained without a catalogue: any genre typed here would be unknown to the model
                genres = []
                c2.caption("This run's items have no genres.")
            n_users = c3.slider("Users", 5, 100, 20, key="rec_cold_k")
            if not title.strip():
                st.warning("Type a title for the new item.")
            elif vocab and not genres:
                st.warning("Choose at least one genre.")
            else:
                reached = cold_start(key, title.strip(), tuple(genres), n_users)
                st.markdown(f"**The {len(reached)} users «{md_text(title)}» would reach first**")
                prof = profiles(key)
                if prof is not None and "user_id" in reached and "user_id" in prof:
                    reached = reached.merge(prof, on="user_id", how="left")
                    for col in ("gender", "occupation"):
                        if col in reached:
                            st.caption(f"{md_text(col)}: " + ", ".join(f"{md_text(v)} {n}" for v, n in reached[col].value_counts().head(5).items()))
                if "in_top_k" in reached:
                    n_fb = int(reached["fallback"].sum()) if "fallback" in reached else 0
                    st.caption(f"It would enter the top-K list of {int(reached['in_top_k'].sum())} of these users."
                               + (f" {n_fb} of them have no training history: they are served the most popular items, where a "
                                  f"new item has no place (rank {NO_RANK})." if n_fb else ""))
                show(cold_start_ranks(reached))

with tab_metrics:
    with friendly_errors("Loading the metrics"):
        m = metrics(key)
        spreads: dict = {}
        with friendly_errors(f"Reading the benchmark results under {md_code(runs_dir() / api.BENCH_DIR)}"):  # not this run's: its own table still shows
            spreads = {p: sp for p in api.PROTOCOLS if not (sp := seed_spread(str(runs_dir()), p, bench_stamp(p))).table.empty}
        spread = spreads.get("stratified")  # the split `train` uses by default, as in this run's table
        if m is None or len(m) == 0:
            st.caption("This run recorded no evaluation metrics.")
        else:
            st.markdown("**Test metrics of this run: the model against the baselines** (same split, same run)")
            st.dataframe(m, hide_index=True, width="stretch")
            num = [c for c in m.columns if c != "model" and pd.api.types.is_numeric_dtype(m[c])]
            if "model" in m and num:
                metric = st.selectbox("Metric", num, index=next((i for i, c in enumerate(num) if c.startswith("ndcg")), 0), key="rec_metric")
                fig = go.Figure(go.Bar(x=m["model"], y=m[metric], name="this run",
                                       marker_color=["#d62728" if i == 0 else "#1f77b4" for i in range(len(m))]))
                sp = spread.table[spread.table["metric"] == metric] if spread is not None else pd.DataFrame()
                if not sp.empty:  # the seed spread next to the single-run bars
                    fig.add_trace(go.Bar(x=sp["model"], y=sp["mean"], name=f"benchmark: mean ± sd over {len(spread.seeds)} seeds",
                                         marker_color="#7f7f7f", error_y=dict(type="data", array=sp["sd"].to_numpy(), visible=True)))
                    fig.update_layout(barmode="group")
                fig.update_layout(title=f"{metric} by model (the run's model first, in red)", height=320, margin=dict(l=10, r=10, t=40, b=10),
                                  legend=dict(orientation="h", y=-0.25))
                st.plotly_chart(fig, width="stretch", key="rec_metric_bar")

        st.markdown("**Seed spread of every model** (mean ± sd over seeds, `bench/recommendation.py`)")
        if not spreads:
            st.caption(f"No benchmark results under `{runs_dir() / api.BENCH_DIR}` yet; "
                       "`.venv/bin/python bench/recommendation.py --part stratified --seeds 0 1 2` writes them.")
        else:
            proto = st.radio("Protocol", list(spreads), horizontal=True, key="rec_spread_protocol",
                             format_func=lambda p: {"stratified": "stratified 75/25 (as train)", "sequential": "leave-last-out (sequence models)"}.get(p, p))
            chosen = spreads[proto]
            wide = chosen.table.assign(value=[f"{a:.4f} ± {b:.4f}" for a, b in zip(chosen.table["mean"], chosen.table["sd"])])
            wide = wide.pivot(index="model", columns="metric", values="value").reset_index()
            st.dataframe(wide, hide_index=True, width="stretch")
            st.caption(f"seeds {', '.join(map(str, chosen.seeds))} · from `{chosen.source}`" + (" · **quick smoke settings, not the benchmark's figures**" if chosen.quick else ""))

        st.markdown("**Validation curve and the chosen epoch**")
        rep = report(key)
        if rep.curves.empty:
            st.caption("This run logged no validation metrics.")
        else:
            if rep.chosen_epoch is not None:
                on = f" (highest {md_code(rep.selection_metric)})" if rep.selection_metric else ""
                st.markdown(f"Early stopping chose epoch **{rep.chosen_epoch}**{on} on the validation split carved from the training part; "
                            "the test split was used once, after that choice.")
            val_cols = sorted((c for c in rep.curves.columns if rep.curves[c].notna().any()), key=lambda c: not str(c).startswith("val"))  # validation first
            curves(rep.curves, val_cols, marks={"chosen epoch": rep.chosen_epoch})
