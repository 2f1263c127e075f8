// The project page's "Background work" panel: while any task runs, poll its state
// once a second and redraw the progress bars. Pure progressive enhancement: the
// server renders the same list, so without JavaScript a reload shows progress too.
(function () {
  "use strict";
  const section = document.getElementById("activity");
  if (!section) return;
  const list = document.getElementById("activity-list");
  const reload = document.getElementById("activity-reload");
  const POLL_MS = 1000;
  let wasRunning = new Set();

  function stateText(t) {
    if (t.running) {
      const stage = (t.stage || t.state).toLowerCase();
      return t.total ? stage + " " + t.done + " of " + t.total : stage;
    }
    if (t.state === "SUCCESS") return "done: " + (t.summary || "");
    if (t.state === "FAILURE") return t.error ? "failed: " + t.error : "failed";
    return t.state.toLowerCase();
  }

  function draw(tasks) {
    list.replaceChildren();
    if (!tasks.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No recent background work.";
      list.append(li);
    }
    for (const t of tasks) {
      const li = document.createElement("li");
      li.dataset.taskId = t.id;
      li.dataset.state = t.state;
      const title = document.createElement("span");
      title.className = "task-title";
      title.textContent = t.title;
      const bar = document.createElement("progress");
      bar.max = 100;
      if (t.percent !== null && t.percent !== undefined) bar.value = t.percent;
      const state = document.createElement("span");
      state.className = "task-state";
      state.textContent = stateText(t);
      li.append(title, " ", bar, " ", state);
      list.append(li);
    }
  }

  async function poll() {
    let tasks;
    try {
      const response = await fetch(section.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      tasks = (await response.json()).tasks;
    } catch (err) {
      setTimeout(poll, 5 * POLL_MS);  // the server restarted or the network blinked: try again later
      return;
    }
    draw(tasks);
    const running = new Set(tasks.filter((t) => t.running).map((t) => t.id));
    for (const id of wasRunning) if (!running.has(id)) reload.hidden = false;
    wasRunning = running;
    if (running.size) setTimeout(poll, POLL_MS);
  }

  // Poll once at load: the page may have been rendered just before a task started.
  for (const li of list.querySelectorAll("li[data-task-id]")) {
    if (["PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"].includes(li.dataset.state)) wasRunning.add(li.dataset.taskId);
  }
  setTimeout(poll, wasRunning.size ? POLL_MS : 0);
})();
