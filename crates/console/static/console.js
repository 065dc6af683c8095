// pedm console: progressive enhancement only. Every page works without this script; with it,
// regions marked data-live are fetched again when the server says they changed (Server-Sent
// Events from /ui/events), and grant countdowns tick. The fragments are server-rendered and
// escaped there; nothing here builds HTML from data.
"use strict";

(function () {
  function refresh(region) {
    var src = region.getAttribute("data-live-src");
    if (!src) return;
    fetch(src, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.redirected || r.status === 401) {
          window.location.assign("/ui/sign-in");
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        region.innerHTML = html;
        tick();
      })
      .catch(function () {});
  }

  function regions(name) {
    return Array.prototype.filter.call(
      document.querySelectorAll("[data-live]"),
      function (el) {
        return name === "all" || el.getAttribute("data-live").split(" ").indexOf(name) >= 0;
      }
    );
  }

  function plural(n, unit) {
    return n + unit;
  }

  function left(ms) {
    var s = Math.floor(ms / 1000);
    if (s <= 0) return "expired";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h > 0) return plural(h, "h") + " " + plural(m, "m") + " left";
    if (m > 0) return plural(m, "m") + " " + plural(r, "s") + " left";
    return plural(r, "s") + " left";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-countdown"));
      if (!isNaN(at)) el.textContent = left(at - now);
    });
  }

  function connect() {
    if (!document.querySelector("[data-live]") || !window.EventSource) return;
    var es = new EventSource("/ui/events");
    ["access", "inbox", "tasks", "all"].forEach(function (name) {
      es.addEventListener(name, function () {
        regions(name).forEach(refresh);
      });
    });
    // What changed between the page's render and the stream's opening was not heard:
    // regions marked data-live-catchup (small ones without fields to type in, such as a
    // task run's state) are fetched again when the stream opens; every region when it
    // reopens after a drop.
    var opened = false;
    es.addEventListener("open", function () {
      regions("all")
        .filter(function (el) {
          return opened || el.hasAttribute("data-live-catchup");
        })
        .forEach(refresh);
      opened = true;
      document.documentElement.setAttribute("data-live-connected", "true");
    });
  }

  // A recording, fetched by the player from the console (hash checked there first).
  function players() {
    document.querySelectorAll("[data-cast]").forEach(function (el) {
      if (!window.AsciinemaPlayer) return;
      window.AsciinemaPlayer.create(el.getAttribute("data-cast"), el, {
        fit: "width",
        autoPlay: true,
        controls: true
      });
    });
  }

  // A live session: the player reads the console's stream of it (its eventsource driver)
  // and shows events as they come (no buffering delay).
  function livePlayers() {
    document.querySelectorAll("[data-live-cast]").forEach(function (el) {
      if (!window.AsciinemaPlayer) return;
      var state = document.getElementById("live-state");
      function say(text) {
        if (state) state.textContent = text;
      }
      var player = window.AsciinemaPlayer.create(
        { driver: "eventsource", url: el.getAttribute("data-live-cast"), bufferTime: 0 },
        el,
        { fit: "width", autoPlay: true, controls: false }
      );
      player.addEventListener("playing", function () {
        say("Live: the session's terminal as it runs.");
      });
      player.addEventListener("ended", function () {
        say("The session ended.");
        document.documentElement.setAttribute("data-live-ended", "true");
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    players();
    livePlayers();
    tick();
    setInterval(tick, 1000);
    connect();
  });
})();
