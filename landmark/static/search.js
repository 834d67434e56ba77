// The search page: upload a photo as a query job, follow it, show its results page.
// Plain browser JavaScript, served by the service itself (no other site is reached).
"use strict";

(() => {
  const TOKEN_KEY = "landmark-api-token";
  const POLL_MS = 500;
  const $ = (id) => document.getElementById(id);
  const tokenRequired = document.body.dataset.tokenRequired === "true";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let waiting = null;  // the photo picked while the token was asked for
  let pageUrl = null;

  class Unauthorised extends Error {}

  function say(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  function askToken(message) {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-message").textContent = message;
    $("token-form").hidden = false;
    $("token").focus();
  }

  // A call to the API with the token; a 401 asks for the token again.
  async function api(path, options = {}) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      askToken("The service refused that token; enter it again.");
      throw new Unauthorised();
    }
    return response;
  }

  async function detail(response) {
    try {
      return (await response.json()).detail || response.statusText;
    } catch {
      return `${response.status} ${response.statusText}`;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function showProgress(job) {
    const bar = $("progress");
    bar.hidden = false;
    if (job.status === "queued") {
      bar.removeAttribute("value");
      say("Waiting for a worker…");
    } else if (job.total > 0) {
      bar.max = job.total;
      bar.value = job.done;
      say(`Comparing with the stored photos: ${job.done} of ${job.total} parts done`);
    } else {
      bar.removeAttribute("value");
      say("Reading the photo and extracting its features…");
    }
  }

  function showPage(html, jobId) {
    if (pageUrl) URL.revokeObjectURL(pageUrl);
    pageUrl = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    $("save").href = pageUrl;
    $("save").download = `landmark-${jobId}.html`;
    $("job").textContent = `job ${jobId}`;
    $("result-bar").hidden = false;
    const frame = $("result");
    frame.hidden = false;
    frame.srcdoc = html;
  }

  // The frame as tall as its page, so that the window scrolls, not the frame.
  function fit() {
    const frame = $("result");
    if (frame.contentDocument && frame.contentDocument.documentElement) {
      frame.style.height = `${frame.contentDocument.documentElement.scrollHeight}px`;
    }
  }

  async function search(file) {
    if (tokenRequired && !token) {
      waiting = file;
      askToken("");
      return;
    }
    $("result").hidden = true;
    $("result-bar").hidden = true;
    say(`Uploading ${file.name}…`);
    $("progress").hidden = false;
    $("progress").removeAttribute("value");
    try {
      const form = new FormData();
      form.append("image", file, file.name);
      form.append("top_k", $("top-k").value || "20");
      const posted = await api("/jobs", { method: "POST", body: form });
      if (!posted.ok) throw new Error(await detail(posted));
      const jobId = (await posted.json()).id;
      let job;
      for (;;) {
        const polled = await api(`/jobs/${jobId}`);
        if (!polled.ok) throw new Error(await detail(polled));
        job = await polled.json();
        if (job.status === "succeeded") break;
        if (job.status === "failed") throw new Error(job.error || "the query failed");
        showProgress(job);
        await sleep(POLL_MS);
      }
      const page = await api(`/jobs/${jobId}/result.html`);
      if (!page.ok) throw new Error(await detail(page));
      showPage(await page.text(), jobId);
      $("progress").hidden = true;
      say(`Done: ${file.name}`);
      document.body.dataset.jobId = jobId;
    } catch (error) {
      $("progress").hidden = true;
      if (error instanceof Unauthorised) {
        waiting = file;
        say("");
      } else {
        say(`Could not search with ${file.name}: ${error.message}`, true);
      }
    }
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    if (waiting) {
      const file = waiting;
      waiting = null;
      search(file);
    }
  });

  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) search(file);
  });

  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) search(file);
  });

  // A photo dropped beside the drop zone is not opened in place of the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  $("result").addEventListener("load", fit);
  window.addEventListener("resize", fit);

  if (tokenRequired && !token) askToken("");
})();
