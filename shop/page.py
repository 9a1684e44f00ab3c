"""What the shopper reads: the status line, tile captions and their marks, the product page, the Settings texts,
the results table, and the page's CSS. Plain strings built from the catalog and one shopper's state; no UI
imports. Everything that comes from a dataset is escaped here: it is shown as text, never run as HTML.
"""

from __future__ import annotations

import functools
import html
from typing import TYPE_CHECKING

from catalog.catalog import Catalog, markdown_text, price_text
from recommender import STRATEGIES

if TYPE_CHECKING:
    from shop.visit import Visit

MARK_LIKE, MARK_NEW, MARK_AGAIN = "★", "✦", "↺"
SEEN_BEFORE = f"{MARK_AGAIN} seen before"  # a caption's last line: shown in an earlier pass or round
DESCRIPTION_LEAD = 280  # characters of a description shown before its "more"
MARKS_SENTENCE = f"{MARK_LIKE} looks like what you picked; {MARK_NEW} is something different, to learn what you like."
WORDS_SENTENCE = f"{MARK_LIKE} matches your words; {MARK_NEW} is something different."


def strategy_choices(names: list[str]) -> list[tuple[str, str]]:
    """The Settings radio's (label, value) pairs: each strategy's name and its one plain sentence (Settings only: the
    main screen speaks of products)."""
    return [(f"{name}: {STRATEGIES[name].sentence}" if name in STRATEGIES else name, name) for name in names]


def captions(
    catalog: Catalog,
    rows: list[int],
    n_like: int,
    marked: bool,
    again: set[int] = frozenset(),
    matching: set[int] | None = None,
) -> list[str]:
    """Tile captions, one line each for the title and the price (Catalog.caption); once the shopper has picked or
    typed, the title line starts with a mark saying why the product is shown (the first `n_like` look like the
    picks, or, given `matching`, those that match the typed words); a product shown before (an earlier pass, or
    a round after a search) says so on a last line ("↺ seen before"). HEAD lays the lines out."""
    out = []
    for i, row in enumerate(rows):
        like = row in matching if matching is not None else i < n_like
        mark = (MARK_LIKE if like else MARK_NEW) if marked else ""
        seen = f"\n{SEEN_BEFORE}" if row in again else ""
        out.append(f"{mark} {catalog.caption(row)}{seen}".lstrip())
    return out


def status_line(catalog: Catalog, visit: Visit) -> str:
    """The one line above the gallery (Markdown; dataset text escaped)."""
    session = visit.session
    seen = f"{session.n_seen:,} of {catalog.n - session.n_hidden:,} products seen"
    if visit.chosen is not None:
        title = markdown_text(catalog.product(visit.chosen)["title"])
        said = f"You opened {title} in the shop" if in_shop(visit) else f"This is it: {title}"
        return (
            f"**{said}**, found in {rounds_text(visit.found_in)}. Press *Start a new search* to look for something "
            "else."
        )
    if visit.found_in is not None:
        return (
            f"**Found it in {rounds_text(visit.found_in)}.** Press *Find a product* for another, or *Start "
            "over* to shop."
        )
    if not session.shown:  # no product can be shown at all (every picture failed)
        return "**No product can be shown.** Press *Start over* to try again."
    if session.passes:
        seen = (
            f"you have seen all {catalog.n - session.n_hidden:,} products; they come round again "
            f"({MARK_AGAIN} seen before), closest to what you want first"
        )
    if visit.target is not None:
        return (
            f"**Round {session.round}** · {seen} · Find the product shown in *Find this product*, by clicking "
            "what looks most like it."
        )
    stars = session.strategy != "random" and (session.query_rows is None or session.matching(session.shown))
    if session.picks:
        hint = f"{MARKS_SENTENCE} Click the one you like best, or open your picks below."
    elif visit.words and stars:  # never a sentence about a mark that no tile carries
        hint = f"{WORDS_SENTENCE} Pick the one you like best."
    else:
        hint = "Pick the product you like best."
    if visit.words:
        return f"**Round {session.round}** · {search_text(visit)} · {seen} · {hint}"
    return f"**Round {session.round}** · {seen} · {hint}"


def in_shop(visit: Visit) -> bool:
    """Whether the hunt ended with *View in shop* (else with *This is it*, or not at all)."""
    return visit.chosen is not None and bool(visit.results) and visit.results[-1].get("how") == "shop"


def search_text(visit: Visit) -> str:
    """What the active search found: how many products match the words (those that can be shown)."""
    session, words = visit.session, markdown_text(visit.words or "")
    count = session.match_count()
    if count is None:
        return f"no product has the words '{words}': the closest in meaning first"
    text = f"{count:,} product{'s' * (count != 1)} match{'es' * (count == 1)} '{words}'"
    if session.strategy == "random":
        text += " (the random strategy shows products at random, whatever you type)"
    return text


def rounds_text(rounds: int) -> str:
    """'1 round', '3 rounds'."""
    return f"{rounds} round{'s' * (rounds != 1)}"


def product_page(
    catalog: Catalog, row: int | None, found_in: int | None = None, picture: str | None = None, in_shop: bool = False
) -> str:
    """The product page's HTML: a larger picture (at the URL `picture`), title, price, *View in shop* (the page's
    main action: the shop's page in a new tab; SHOP_LINK_JS tells the server it was followed), brand, category and
    description; every value escaped. Before any pick, a line saying what will appear here. `found_in`: the rounds
    the hunt took once it ended on this product, `in_shop` when it ended by *View in shop*."""
    if row is None:
        return '<div class="pp pp-empty">Pick a product to see it here.</div>'
    facts = catalog.product(row)
    esc = html.escape
    parts = ['<div class="pp">']
    if found_in is not None:
        said = "Opened in the shop" if in_shop else "This is it"
        parts.append(f'<p class="pp-found">{said}: found in {rounds_text(found_in)}.</p>')
    if picture:
        parts.append(f'<img class="pp-img" src="{esc(picture)}" alt="{esc(facts["title"])}">')
    parts.append(f'<h3 class="pp-title">{esc(facts["title"])}</h3>')
    price = price_html(facts, catalog.locale)
    if price:
        parts.append(f'<p class="pp-price">{price}</p>')
    if facts["url"]:
        parts.append(
            f'<a class="pp-shop" href="{esc(facts["url"])}" target="_blank" rel="noopener noreferrer" '
            f'data-product="{esc(catalog.product_id(row))}">View in shop<span aria-hidden="true"> ↗</span></a>'
        )
    meta = " · ".join(esc(v) for v in (facts["brand"], facts["category"]) if v)
    if meta:
        parts.append(f'<p class="pp-meta">{meta}</p>')
    if facts["description"]:
        parts.append(description_html(facts["description"]))
    return "".join(parts) + "</div>"


def price_html(facts: dict, locale: object) -> str:
    """The product page's price in the shop's locale (escaped HTML; "" when none): "from" the lowest price when the
    variants' prices differ (the first variant's stays the price), and a higher compare-at price struck through,
    read out as "was ..." (a screen reader does not announce a strike)."""
    price, lowest, was = facts["price"], facts.get("lowest_price"), facts.get("compare_at_price")
    text = functools.partial(price_text, currency=facts["currency"], locale=locale)
    if price is None:
        return f"from {html.escape(text(lowest))}" if text(lowest) else ""
    parts = [html.escape(text(price))]
    if not parts[0]:
        return ""
    if lowest is not None and lowest == price and text(lowest):
        parts = [f"from {parts[0]}"]
    elif lowest is not None and lowest < price and text(lowest):
        parts.append(f'<span class="pp-from">· options from {html.escape(text(lowest))}</span>')
    if was is not None and was > price and text(was):
        parts.append(f'<span class="pp-was"><span class="pp-sr">was </span><s>{html.escape(text(was))}</s></span>')
    return " ".join(parts)


def description_html(text: str, lead: int = DESCRIPTION_LEAD) -> str:
    """A description that reads in full: its first `lead` characters (to a word's end), the rest folded under a
    visible "more" (a <details>, opened by click or keyboard), not a silent scroll box; escaped."""
    cut = text.rfind(" ", 0, lead) if len(text) > lead else len(text)
    cut = cut if cut > lead // 2 else min(lead, len(text))
    first, rest = html.escape(text[:cut].rstrip()), html.escape(text[cut:].lstrip())
    if not rest:
        return f'<p class="pp-desc">{first}</p>'
    return (
        f'<p class="pp-desc">{first}…</p><details class="pp-more"><summary>more</summary>'
        f'<p class="pp-desc">{rest}</p></details>'
    )


def following_text(weights: dict[str, float]) -> str:
    """Settings: how much `bayes` trusts each way of comparing pictures for this shopper ("" when one way)."""
    if len(weights) < 2:
        return ""
    view, weight = max(weights.items(), key=lambda kv: kv[1])
    return (
        f"Following: {view} {weight:.0%}. bayes compares pictures in {len(weights)} ways and follows the one "
        "your picks agree with most."
    )


RESULT_HEADERS = ["product", "found with", "rounds", "strategy"]
RESULT_HOW = {"chosen": "This is it", "shop": "View in shop", "target": "Find a product"}


def results_rows(catalog: Catalog, results: list[dict]) -> list[list]:
    """The results table: each hunt (product, how it ended, rounds, strategy), then each strategy's mean."""
    rows = []
    for r in results:
        title = catalog.product(r["product"])["title"] if r.get("product") is not None else ""
        how = RESULT_HOW.get(r.get("how"), "Find a product") if r["rounds"] is not None else "gave up"
        rows.append([title, how, r["rounds"] if r["rounds"] is not None else "", r["strategy"]])
    for name in sorted({r["strategy"] for r in results}):
        done = [r["rounds"] for r in results if r["strategy"] == name and r["rounds"] is not None]
        if done:
            rows.append(["", f"mean of {len(done)}", round(sum(done) / len(done), 2), name])
    return rows


CSS = """
#products .grid-container, #picks .grid-container { grid-template-rows: none; grid-auto-rows: auto; }
#products .grid-container { grid-template-columns: repeat(5, minmax(0, 1fr)); }
#picks .grid-container { grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)); }
#products .grid-wrap, #picks .grid-wrap { height: auto; min-height: 0; max-height: none; overflow-x: hidden;
  padding-top: 34px; }
#products .thumbnail-item, #picks .thumbnail-item { aspect-ratio: auto; height: auto; display: flex;
  flex-direction: column; overflow: hidden; }
#products .thumbnail-item > img, #picks .thumbnail-item > img { aspect-ratio: 1 / 1; height: auto; width: 100%;
  flex: none; background: #fff; }
#products .caption-label, #picks .caption-label { position: static; max-width: none; border: 0; border-radius: 0;
  background: none; padding: 4px 6px; white-space: pre-line; overflow-wrap: anywhere; text-align: left;
  line-height: 1.3; opacity: 1; }
#products .thumbnail-item:has(> .cap) > .caption-label, #picks .thumbnail-item:has(> .cap) > .caption-label {
  display: none; }
#products .cap, #picks .cap { display: flex; flex-direction: column; gap: 2px; padding: 4px 6px 6px; min-width: 0;
  text-align: left; line-height: 1.3; font-size: var(--block-label-text-size); color: var(--body-text-color); }
#products .cap-title, #picks .cap-title { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
  overflow: hidden; overflow-wrap: anywhere; }
#products .cap-price, #picks .cap-price { font-weight: 600; overflow-wrap: anywhere; }
#products .cap > :empty, #picks .cap > :empty { display: none; }
#picks .cap { font-size: 11px; }
#picks .cap-title { -webkit-line-clamp: 1; }
#products .thumbnail-item:hover, #picks .thumbnail-item:hover { --ring-color: transparent; filter: none;
  border-color: var(--border-color-primary); box-shadow: 0 3px 10px rgba(0, 0, 0, .18); }
#products .thumbnail-item.selected, #picks .thumbnail-item.selected { --ring-color: transparent;
  border-color: var(--border-color-primary); }
#products .thumbnail-item:focus-visible, #picks .thumbnail-item:focus-visible { outline: 2px solid
  var(--color-accent); outline-offset: 2px; }
#products .thumbnail-lg:hover .caption-label, #picks .thumbnail-lg:hover .caption-label { opacity: 1; }
#shop-row { container-type: inline-size; }
#target { --tile: calc(15cqw - 14px); }
#target img { width: var(--tile); height: var(--tile); max-width: 100%; max-height: none; object-fit: contain; }
#product-page .pp { display: flex; flex-direction: column; gap: 4px; }
#product-page .pp-img { width: 100%; max-width: 360px; aspect-ratio: 1 / 1; object-fit: contain; background: #fff;
  border: 1px solid var(--border-color-primary); border-radius: 6px; }
#product-page .pp-title { margin: 6px 0 0; overflow-wrap: anywhere; }
#product-page .pp-price { font-size: 1.15em; font-weight: 600; margin: 0; }
#product-page .pp-from, #product-page .pp-was { font-weight: 400; color: var(--body-text-color); }
#product-page .pp-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
  white-space: nowrap; }
#product-page .pp-meta { color: var(--body-text-color); font-size: .95em; margin: 0; }
#product-page .pp-desc { white-space: pre-line; overflow-wrap: anywhere; margin: 4px 0; }
#product-page .pp-more summary { cursor: pointer; font-weight: 600; color: var(--body-text-color); }
#product-page .pp-found { font-weight: 600; margin: 0; }
#product-page a.pp-shop { display: block; align-self: flex-start; width: 100%; max-width: 360px;
  box-sizing: border-box; margin: 8px 0 4px; padding: 10px 16px;
  border-radius: var(--button-large-radius); background: #b23c0a; color: #fff; font-weight: 600;
  font-size: var(--button-large-text-size); text-align: center; text-decoration: none; }
#product-page a.pp-shop:hover { background: #8a2e08; }
#new-search { --button-primary-background-fill: #b23c0a; --button-primary-background-fill-hover: #8a2e08;
  --button-primary-border-color: #b23c0a; --button-primary-border-color-hover: #8a2e08;
  --button-primary-text-color: #fff; --button-primary-text-color-hover: #fff; }
footer, footer .show-api, footer .settings { color: var(--body-text-color); }
footer a.built-with { color: var(--body-text-color) !important; }  /* Gradio greys it to 1.9:1 on white */
#product-page a.pp-shop:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 2px; }
#product-page .pp-empty { color: var(--body-text-color); padding: 8px 0; }
@media (max-width: 640px) {
  #shop-name p { display: none; }
  #shop-name h2 { margin: 0; }
  #status:not(.open) p { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
    cursor: pointer; }
  #products .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  #picks .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)); }
  #target { --tile: calc(50cqw - 24px); }
  #side:has(#target img) { order: -1; }
}
"""

# A tile's caption is one string (Gradio's), its lines the title, the price and maybe "seen before": it is shown
# as spans of its own (.cap) beside Gradio's caption, so the title keeps to two lines and the price to a line of
# its own, never cut (without the script, Gradio's caption shows the lines as they are). Screen readers: Gradio
# names every tile "Thumbnail N of 10"; each tile is named by its caption's lines instead, and the status line is
# a polite live region, so what a round changed is read out. On a phone, a tap on a product brings the product
# page (below the gallery there) into view.
HEAD = """<script>
(() => {
  const put = (el, text) => { if (el.textContent !== text) el.textContent = text; };
  const lay = (tile, lines) => {
    let cap = tile.querySelector(':scope > .cap');
    if (!lines.length) return cap?.remove();
    if (!cap) {
      cap = document.createElement('span');
      cap.className = 'cap';
      cap.setAttribute('aria-hidden', 'true');
      for (const part of ['cap-title', 'cap-price', 'cap-note']) cap.append(Object.assign(
        document.createElement('span'), {className: part}));
      tile.append(cap);
    }
    const rest = lines.slice(1), again = l => l.startsWith('\\u21ba');
    put(cap.children[0], lines[0]);
    put(cap.children[1], rest.filter(l => !again(l)).join(' '));
    put(cap.children[2], rest.filter(again).join(' '));
  };
  const name = () => {
    for (const tile of document.querySelectorAll('#products .thumbnail-item, #picks .thumbnail-item')) {
      const lines = (tile.querySelector('.caption-label')?.textContent || '').split('\\n').map(l => l.trim())
        .filter(Boolean);
      const text = lines.join(', ');
      if (text && tile.getAttribute('aria-label') !== text) tile.setAttribute('aria-label', text);
      lay(tile, lines);
    }
    const status = document.getElementById('status');
    if (status && status.classList.contains('open') !== statusOpen) status.classList.toggle('open', statusOpen);
    if (status && status.getAttribute('aria-live') !== 'polite') {
      status.setAttribute('role', 'status');
      status.setAttribute('aria-live', 'polite');
    }
  };
  // On a phone the product page sits below all ten tiles: after a tap it is brought into view.
  // Its answer is a new round (the status line changes) or another product on the page (its title changes).
  let tapped = false, shown = null;
  const tap = e => { if (e.target.closest?.('#products, #picks')) tapped = true; };
  document.addEventListener('pointerdown', tap, true);
  document.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') tap(e); }, true);
  const bring = () => {
    const title = document.querySelector('#product-page h3')?.innerText ?? null;
    const now = `${document.getElementById('status')?.innerText}\n${title}`;
    if (now === shown) return;
    shown = now;
    if (tapped && title !== null && matchMedia('(max-width: 640px)').matches) {
      tapped = false;
      document.getElementById('product-page')?.scrollIntoView({block: 'start'});
    }
  };
  // On a phone the status line is cut to two lines; a tap on it shows it whole (and again cuts it).
  let statusOpen = false;
  document.addEventListener('click', e => { if (e.target.closest?.('#status')) { statusOpen = !statusOpen; name(); } });
  new MutationObserver(() => { name(); bring(); })
    .observe(document.documentElement, {subtree: true, childList: true, characterData: true});
})();
</script>"""


# The product page's *View in shop*: followed (a click, a middle click or Enter), it tells the server which product's
# link it was; the server ends the hunt only when that is the product its own copy of the visit shows.
SHOP_LINK_JS = """
const follow = e => {
  const link = e.target.closest?.('a.pp-shop');
  if (link && (e.type === 'click' || e.button === 1)) trigger('click', {product: link.dataset.product || ''});
};
element.addEventListener('click', follow);
element.addEventListener('auxclick', follow);
"""
