// Keyboard shortcuts of the case page: n next case, c claim, f confirm fraud,
// p false positive, e escalate. Ignored while typing in a field or with a modifier key.
(function () {
  var KEYS = { n: "cs-next", c: "cs-claim", f: "cs-fraud", p: "cs-fp", e: "cs-escalate" };
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    var t = ev.target;
    var tag = t && t.tagName ? t.tagName.toLowerCase() : "";
    if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
    var id = KEYS[ev.key];
    var button = id && document.getElementById(id);
    if (button && !button.disabled) {
      ev.preventDefault();
      button.click();
    }
  });
})();
