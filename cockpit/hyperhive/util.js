/* Shared by the page's scripts: the two bus clients, DOM building that never parses
   markup (approval payloads, spec text and journal lines come from untrusted agents, so
   every string goes in as text), times, and the plain-words form of the bus's refusals. */
"use strict";

(function () {
    const hh = {};
    window.hh = hh;

    hh.MANAGER_PATH = "/org/hyperhive/hive1";
    hh.MANAGER_IFACE = "org.hyperhive.Hive1.Manager";
    hh.SYSTEMD_PATH = "/org/freedesktop/systemd1";
    hh.SYSTEMD_IFACE = "org.freedesktop.systemd1.Manager";
    hh.NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;

    // superuser "try": an admin whose session has administrative access acts as root
    // (the agent verbs need root); anyone else acts as themself, and the bus decides.
    hh.hive = cockpit.dbus("org.hyperhive.Hive1", { bus: "system", superuser: "try" });
    hh.systemd = cockpit.dbus("org.freedesktop.systemd1", { bus: "system", superuser: "try" });

    /* A tiny event hub between the views: "agent" (a row changed), "approvals". */
    const listeners = {};
    hh.on = function (ev, fn) { (listeners[ev] = listeners[ev] || []).push(fn) };
    hh.emit = function (ev, arg) { for (const fn of listeners[ev] || []) fn(arg) };

    hh.call = function (method, args) {
        return hh.hive.call(hh.MANAGER_PATH, hh.MANAGER_IFACE, method, args);
    };

    /* el("td", {class: "x", "data-name": n}, "text", child…): attributes are set as
       attributes and children as text nodes or elements, never as HTML. */
    hh.el = function (tag, attrs) {
        const node = document.createElement(tag);
        for (const [k, v] of Object.entries(attrs || {})) {
            if (v === undefined || v === null || v === false) continue;
            if (k === "onclick") node.addEventListener("click", v);
            else node.setAttribute(k, v === true ? "" : String(v));
        }
        for (let i = 2; i < arguments.length; i++) {
            const c = arguments[i];
            if (c === undefined || c === null) continue;
            node.append(c instanceof Node ? c : document.createTextNode(String(c)));
        }
        return node;
    };

    hh.replace = function (node) {
        node.replaceChildren.apply(node, Array.prototype.slice.call(arguments, 1));
    };

    function pad(n) { return String(n).padStart(2, "0") }

    /* Unix µs as hivectl prints them (local time, to the second); 0 is "-". */
    hh.fmtUsec = function (us) {
        const n = Number(us);
        if (!n) return "-";
        const d = new Date(n / 1000);
        return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
               pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    };

    const DENIED = ["org.hyperhive.Hive1.Error.AccessDenied", "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", "access-denied"];

    /* The bus's answer in plain words: a refusal says who may do it, anything else is the
       daemon's own one-line message (it names the agent, unit or path). */
    hh.plainError = function (err, what, who) {
        const name = (err && (err.name || err.problem)) || "";
        const message = (err && err.message) || String(err);
        if (DENIED.indexOf(name) >= 0)
            return "Not allowed: only " + (who || "root and members of the hive-admin group") + " may " + what +
                ". The system bus refused: " + message;
        if (name === "org.freedesktop.DBus.Error.ServiceUnknown" || name === "org.freedesktop.DBus.Error.NameHasNoOwner")
            return "hive-c0re is not running on this host, so nobody can " + what + " now (" + message + ")";
        return "Could not " + what + ": " + message;
    };

    hh.isDenied = function (err) {
        return DENIED.indexOf((err && (err.name || err.problem)) || "") >= 0;
    };

    hh.alert = function (text) {
        const box = document.getElementById("alert");
        box.textContent = text;
        box.hidden = !text;
    };

    /* A number of systemd's uint64 properties: "infinity" for UINT64_MAX (which JSON
       carries rounded), the value otherwise. */
    hh.u64 = function (v) {
        if (v === undefined || v === null) return "-";
        // Cockpit hands UINT64_MAX over as -1 or as 2^64 rounded, depending on the path.
        return Number(v) >= 2 ** 63 || Number(v) < 0 ? "infinity" : String(v);
    };

    /* journalctl's JSON lines as they come (Cockpit's own journal view spawns journalctl
       -o json the same way); `each` gets one entry object at a time. */
    hh.journal = function (args, each) {
        let partial = "";
        const proc = cockpit.spawn(["journalctl", "--no-pager", "-o", "json"].concat(args),
            { superuser: "try", err: "message" });
        proc.stream(function (data) {
            const lines = (partial + data).split("\n");
            partial = lines.pop();
            for (const line of lines) {
                if (!line) continue;
                try { each(JSON.parse(line)) } catch (e) { /* a line cut short: skip */ }
            }
        });
        proc.catch(function () { /* no journal access: the views show "-" */ });
        return proc;
    };

    /* A journal field as text (journalctl -o json gives binary fields as byte arrays). */
    hh.field = function (entry, name) {
        const v = entry[name];
        if (Array.isArray(v)) return typeof v[0] === "number" ? String.fromCharCode.apply(null, v) : String(v[0]);
        return v === undefined ? "" : String(v);
    };
})();
