// Semantris, Arcade and Blocks (the page's <body data-mode>): the server ranks the words on screen against a clue
// (/api/semantris/rank) and the best match clears. Arcade: words keep arriving and a clock runs down, cleared words
// give time back. Blocks: phrases, no clock; a few arrive after each clue. A full board ends the game.
"use strict";

const MODE = document.body.dataset.mode;
const RULES = {
  arcade: { first: 6, max: 12, draw: 40, timed: true, seconds: 60, bonusSeconds: 4 },
  blocks: { first: 8, max: 12, draw: 30, timed: false },
}[MODE];
const POINTS = 10;  // per cleared word, times the level
const PER_LEVEL = 5;  // cleared words per level

const $ = (id) => document.getElementById(id);
const board = $("board");
board.className = MODE === "arcade" ? "column" : "blocks";
const clueInput = $("clue"), clueButton = $("clue-button"), startButton = $("start");
const status = $("status");
let game = null;

startButton.addEventListener("click", start);
$("clue-form").addEventListener("submit", (event) => { event.preventDefault(); sendClue(); });

async function start() {
  stop();
  startButton.disabled = true;
  const requested = new URLSearchParams(location.search).get("seed");
  game = { words: [], supply: [], seed: requested === null ? undefined : Number(requested),
           score: 0, cleared: 0, clues: 0, time: RULES.seconds, timers: [], over: false };
  try {
    await drawMore();
  } catch (err) {
    showStatus(status, err.message, true);
    startButton.disabled = false;
    return;
  }
  while (game.words.length < RULES.first && game.supply.length) game.words.unshift(game.supply.shift());
  render();
  clueInput.disabled = clueButton.disabled = false;
  startButton.disabled = false;
  startButton.textContent = "Restart";
  clueInput.value = "";
  clueInput.focus();
  showStatus(status, MODE === "arcade" ? "Go! Type a clue for any word." : "Type a clue for any phrase.");
  if (RULES.timed) {
    let sinceDrop = 0;
    game.timers.push(setInterval(() => {
      game.time -= 0.25;
      sinceDrop += 0.25;
      if (sinceDrop >= Math.max(2, 7 - level())) { sinceDrop = 0; arrive(1); }
      if (game.time <= 0) end("time is up");
      render();
    }, 250));
  }
}

async function drawMore() {
  // The first draw takes the page's ?seed= (or the server's), later ones the next seeds: a seed replays a game.
  const request = { mode: MODE, n: RULES.draw, avoid: game.words.concat(game.supply).slice(0, 40) };
  if (game.seed !== undefined) request.seed = game.seed;
  const data = await api("/api/semantris/round", request);
  game.seed = data.seed + 1;
  const seen = new Set(game.words.concat(game.supply).map((w) => w.toLowerCase()));
  game.supply.push(...data.items.filter((w) => !seen.has(w.toLowerCase())));
}

function arrive(count) {
  for (let i = 0; i < count && !game.over; i++) {
    if (game.words.length >= RULES.max) { end("the board is full"); return; }
    if (!game.supply.length) return;
    game.words.unshift(game.supply.shift());
  }
  if (game.supply.length < 5) drawMore().catch((err) => showStatus(status, err.message, true));
}

async function sendClue() {
  if (!game || game.over) return;
  const clue = clueInput.value.trim();
  if (!clue) return;
  clueButton.disabled = true;
  showStatus(status, "Ranking…");
  try {
    const data = await api("/api/semantris/rank", { clue, words: game.words.slice() });
    if (game.over) return;
    clear(data.clue, data.ranking);
  } catch (err) {
    showStatus(status, err.message, true);
  } finally {
    clueButton.disabled = game.over;
  }
}

function clear(clue, ranking) {
  const best = ranking[0].word;
  const points = POINTS * level();
  game.words = game.words.filter((w) => w !== best);
  game.cleared += 1;
  game.clues += 1;
  game.score += points;
  if (RULES.timed) game.time = Math.min(RULES.seconds, game.time + RULES.bonusSeconds);
  else arrive(game.clues % 3 === 0 ? 2 : 1);
  $("ranking").replaceChildren(...ranking.map((r) =>
    element("li", {}, `${r.word} (${r.score.toFixed(2)})`)));
  showStatus(status, `"${clue}" cleared "${best}": +${points}`);
  clueInput.value = "";
  if (!game.words.length) arrive(RULES.first);
  render();
}

function level() {
  return 1 + Math.floor(game.cleared / PER_LEVEL);
}

function render() {
  board.replaceChildren(...game.words.map((w) => element("div", { class: "word" }, w)));
  $("score").textContent = String(game.score);
  $("level").textContent = String(level());
  $("cleared").textContent = String(game.cleared);
  if (RULES.timed) {
    $("time").textContent = `${Math.max(0, Math.ceil(game.time))} s`;
    $("timebar").style.width = `${Math.max(0, 100 * game.time / RULES.seconds)}%`;
  }
}

function end(reason) {
  game.over = true;
  stop();
  clueInput.disabled = clueButton.disabled = true;
  startButton.textContent = "Play again";
  showStatus(status, `Game over: ${reason}. Final score ${game.score}.`);
}

function stop() {
  if (game) game.timers.forEach(clearInterval);
}
