// The playground's one script: follow a job's page live. The server sends HTML fragments over server-sent
// events (`status` while the job waits and runs, then `result` once): they replace the part of the page they
// describe. Without this script the page refreshes itself (a <noscript> refresh) and shows the same.
(function () {
  "use strict";
  var job = document.querySelector("[data-events]");
  if (!job || !window.EventSource) {
    return;
  }
  var source = new EventSource(job.getAttribute("data-events"));
  function replace(selector, html) {
    var part = job.querySelector(selector);
    if (part) {
      part.outerHTML = html;
    }
  }
  source.addEventListener("status", function (event) {
    replace("[data-status]", event.data);
  });
  source.addEventListener("result", function (event) {
    source.close(); // the job has ended: nothing more will come
    replace("[data-status]", event.data);
    job.removeAttribute("data-events");
  });
})();
