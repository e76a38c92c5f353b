// Talk to Books: the hits of /api/search grouped by book (books in the order of their best sentence), each sentence
// highlighted inside its paragraph; "More from this book" asks again within that one book.
"use strict";

const CONTEXT = 320;  // characters of the paragraph kept on each side of the sentence
const form = document.getElementById("search-form");
const status = document.getElementById("status");
const results = document.getElementById("results");
let lastQuery = "";

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = document.getElementById("query").value.trim();
  if (!query) return;
  const k = Number(document.getElementById("k").value);
  const button = document.getElementById("search-button");
  button.disabled = true;
  showStatus(status, "Searching…");
  try {
    const data = await api("/api/search", { query, k });
    lastQuery = query;
    render(data.hits);
    const books = new Set(data.hits.map((h) => h.book_id)).size;
    showStatus(status, data.hits.length ? `${data.hits.length} sentences from ${books} books.` : "No sentences found.");
  } catch (err) {
    showStatus(status, err.message, true);
  } finally {
    button.disabled = false;
  }
});

function render(hits) {
  results.replaceChildren();
  const groups = new Map();
  for (const hit of hits) {
    if (!groups.has(hit.book_id)) groups.set(hit.book_id, []);
    groups.get(hit.book_id).push(hit);
  }
  for (const [bookId, bookHits] of groups) results.append(bookSection(bookId, bookHits));
}

function bookSection(bookId, hits) {
  const list = element("ol", { class: "hits" }, ...hits.map(hitItem));
  const more = element("button", { class: "secondary more", type: "button" }, "More from this book");
  const section = element("section", { class: "book", "data-book-id": bookId },
    element("h2", { class: "title" }, hits[0].title),
    element("p", { class: "author" }, hits[0].author || "unknown author"), list, more);
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const data = await api("/api/search", { query: lastQuery, k: 10, book_id: bookId });
      list.replaceChildren(...data.hits.map(hitItem));
      more.textContent = `Showing the best ${data.hits.length} from this book`;
    } catch (err) {
      more.disabled = false;
      showStatus(status, err.message, true);
    }
  });
  return section;
}

function hitItem(hit) {
  const text = hit.paragraph_text;
  let from = Math.max(0, hit.sentence_start - CONTEXT);
  let to = Math.min(text.length, hit.sentence_end + CONTEXT);
  // Cut the context between words.
  const after = text.indexOf(" ", from);
  if (from > 0 && after !== -1 && after < hit.sentence_start) from = after + 1;
  const before = text.lastIndexOf(" ", to);
  if (to < text.length && before > hit.sentence_end) to = before;
  const quote = element("blockquote", {},
    (from > 0 ? "…" : "") + text.slice(from, hit.sentence_start),
    element("mark", {}, text.slice(hit.sentence_start, hit.sentence_end)),
    text.slice(hit.sentence_end, to) + (to < text.length ? "…" : ""));
  const where = [hit.chapter ? `${hit.chapter}` : "", `paragraph ${hit.paragraph}`].filter(Boolean).join(", ");
  return element("li", { class: "hit" }, quote,
    element("div", { class: "meta" }, `${where} · score ${hit.score.toFixed(3)}`));
}
