"use strict";

api("/api/health").then((h) => {
  document.getElementById("index-info").textContent =
    `Index: ${h.sentences.toLocaleString()} sentences from ${h.books} books, encoder ${h.encoder}.`;
}).catch((err) => showStatus(document.getElementById("index-info"), err.message, true));
