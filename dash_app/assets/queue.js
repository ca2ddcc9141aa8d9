// The case queue's grid (AG Grid, infinite row model; see dash_app/views/alerts.py).
// reload: a filter change purges the loaded pages and shows the first one (the new
// filter's rows are asked from the server); a tick, an action or a push refreshes the
// loaded pages in place, which keeps the scroll position and the selection.
// selection: "Select page" ticks every case of the page shown, "Clear" unticks all.
(function () {
  var RELOADS = { "al-tick": 1, "al-version": 1, "al-pushed": 1 };
  function grid() {
    try {
      return window.dash_ag_grid.getApi("al-grid");
    } catch (e) {
      return null; // not rendered yet: its first getRows loads it
    }
  }
  function triggered() {
    var t = (window.dash_clientside.callback_context || {}).triggered || [];
    return t.map(function (x) { return String(x.prop_id).split(".")[0]; });
  }
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    queue: {
      reload: function () {
        var api = grid();
        if (!api) return window.dash_clientside.no_update;
        var ids = triggered();
        if (ids.length && ids.every(function (i) { return RELOADS[i]; })) {
          api.refreshInfiniteCache();
        } else {
          api.deselectAll();
          api.purgeInfiniteCache();
          api.paginationGoToFirstPage();
        }
        return Date.now();
      },
      selection: function () {
        var api = grid();
        if (!api) return window.dash_clientside.no_update;
        if (triggered().indexOf("al-clear") >= 0) {
          api.deselectAll();
        } else {
          var size = api.paginationGetPageSize();
          var first = api.paginationGetCurrentPage() * size;
          var last = Math.min(first + size, api.getDisplayedRowCount());
          for (var i = first; i < last; i++) {
            var node = api.getDisplayedRowAtIndex(i);
            if (node && node.data) node.setSelected(true);
          }
        }
        return Date.now();
      },
    },
  });
})();
