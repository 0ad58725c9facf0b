/* Routing between the three views (#/, #/approvals, #/agent/NAME, kept in Cockpit's
   location so the shell's URL and history follow), and the load time the tests read:
   body[data-loaded-ms] is set once both lists have been read and rendered. */
"use strict";

(function () {
    const hh = window.hh;

    function route() {
        const path = cockpit.location.path;
        const view = path[0] === "approvals" ? "approvals" : path[0] === "agent" && path[1] ? "agent" : "agents";
        for (const v of ["agents", "agent", "approvals"])
            document.getElementById("view-" + v).hidden = v !== view;
        document.getElementById("tab-agents").classList.toggle("hh-current", view !== "approvals");
        document.getElementById("tab-approvals").classList.toggle("hh-current", view === "approvals");
        if (view === "agent") hh.showAgent(path[1]);
        else hh.leaveAgent();
        document.body.setAttribute("data-view", view);
    }

    document.addEventListener("DOMContentLoaded", function () {
        // Links are "#/…"; Cockpit keeps a page's location in the hash.
        document.body.addEventListener("click", function (ev) {
            const a = ev.target.closest("a[href^='#/']");
            if (!a) return;
            ev.preventDefault();
            cockpit.location.go(a.getAttribute("href").slice(1));
        });
        cockpit.addEventListener("locationchanged", route);
        route();
        const mark = what => () => document.body.setAttribute("data-" + what + "-ms", String(Math.round(performance.now())));
        Promise.all([hh.loadAgents().finally(mark("agents")), hh.loadApprovals().finally(mark("approvals"))]).finally(function () {
            document.body.setAttribute("data-loaded-ms", String(Math.round(performance.now())));
        });
    });
})();
