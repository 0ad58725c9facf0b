/* The agent list: names from hive-c0re (ListAgents) and from the hive-agent-* units
   systemd holds, as `hivectl list` finds them; each row is kept live from D-Bus signals
   (the unit's PropertiesChanged, AgentNew/AgentRemoved, systemd's UnitNew) and the crash
   column from PID 1's own journal entries, followed — nothing polls. */
"use strict";

(function () {
    const hh = window.hh;
    const PROCESS_EXIT = "98e322203f7a4ed290d09fe03c09fe15";
    const FAILURE_RESULT = "d9b373ed55a64feb8242e02dbe79a49c";
    const SIGNALS = { 1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL", 10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM" };

    /* name → {name, unit, machine, path, props (the unit's, as shown), crash, exits, harness, row} */
    const agents = new Map();
    hh.agents = agents;

    function unitOf(name) { return "hive-agent-" + name + ".service" }
    function nameOf(unit) {
        const m = /^hive-agent-(.*)\.service$/.exec(unit);
        return m && hh.NAME_RE.test(m[1]) ? m[1] : null;
    }

    /* "killed by signal 9/KILL", as hivectl status says it (src/cli/crash.rs). */
    hh.crashHow = function (c) {
        const sig = s => SIGNALS[s] ? s + "/" + SIGNALS[s] : s;
        switch (c.exit_code) {
        case "killed": return "killed by signal " + sig(c.exit_status);
        case "dumped": return "dumped core on signal " + sig(c.exit_status);
        case "exited": return "exited with status " + c.exit_status;
        case "": return "main process end not recorded";
        default: return c.exit_code + ", status " + c.exit_status;
        }
    };

    hh.crashText = function (c) {
        return c ? hh.crashHow(c) + " (result " + c.result + ") at " + hh.fmtUsec(c.at) : "none recorded";
    };

    function stateClass(s) { return "hh-state-" + (s || "inactive") }

    function bounds(svc) {
        if (svc.MemoryMax === undefined) return "-";
        const parts = [];
        if (hh.u64(svc.MemoryMax) !== "infinity") parts.push("memory " + cockpit.format_bytes(Number(svc.MemoryMax), 1024));
        if (hh.u64(svc.TasksMax) !== "infinity") parts.push("tasks " + svc.TasksMax);
        if (hh.u64(svc.CPUWeight) !== "infinity") parts.push("cpu weight " + svc.CPUWeight);
        return parts.length ? parts.join(", ") : "none";
    }

    /* Cockpit's view of the user (root, or administrative access): hive-c0re lets only
       root start, stop, restart and rebuild, so the buttons are off for anyone else. The
       bus still decides; this only spares a click that would be refused. */
    const admin = cockpit.permission({ admin: true });
    admin.addEventListener("changed", () => {
        for (const a of agents.values()) render(a);
    });

    function act(name, verb, label) {
        const denied = admin.allowed === false;
        return hh.el("button", {
            class: "hh-btn", type: "button", "data-verb": verb, disabled: denied,
            title: denied ? "Only root (or administrative access in Cockpit) may " + label.toLowerCase() + " agents" : null,
            onclick: function (ev) {
                ev.preventDefault();
                hh.alert("");
                hh.call(verb + "Agent", [name]).catch(e =>
                    hh.alert(hh.plainError(e, label.toLowerCase() + " agent " + name, "root")));
            }
        }, label);
    }

    hh.actionButtons = function (name) {
        return [act(name, "Start", "Start"), act(name, "Stop", "Stop"),
            act(name, "Restart", "Restart"), act(name, "Rebuild", "Rebuild")];
    };

    function render(a) {
        const p = a.props;
        const known = p.ActiveState !== undefined;
        const active = known ? p.ActiveState : "inactive";
        const state = known ? p.ActiveState + " (" + p.SubState + ")" : "inactive (no unit loaded)";
        const row = a.row || hh.el("tr", { "data-agent": a.name });
        a.row = row;
        hh.replace(row,
            hh.el("td", {}, hh.el("a", { href: "#/agent/" + a.name, class: "hh-name" }, a.name)),
            hh.el("td", { class: "hh-state " + stateClass(active), "data-active": active, "data-sub": known ? p.SubState : "" }, state),
            hh.el("td", {}, a.machine),
            hh.el("td", { class: "hh-restarts" }, p.NRestarts !== undefined ? String(p.NRestarts) : "-"),
            hh.el("td", { class: "hh-crash" }, hh.crashText(a.crash)),
            hh.el("td", { class: "hh-harness" }, a.harness || "-"),
            hh.el("td", { class: "hh-bounds" }, bounds(p)),
            hh.el("td", {}, ...hh.actionButtons(a.name)));
        place(row, a.name);
        hh.emit("agent", a);
    }

    /* Keeps rows sorted by name without rebuilding the table. */
    function place(row, name) {
        const body = document.getElementById("agents-body");
        if (row.parentNode === body) return;
        let before = null;
        for (const other of body.children) {
            if (other.getAttribute("data-agent") > name) { before = other; break }
        }
        body.insertBefore(row, before);
        document.getElementById("agents-empty").hidden = true;
    }

    /* The harness's state from the container's own systemd (`systemctl -M`, root only),
       read when the container's state changes; "-" when it cannot be read. A process per
       read, so they wait until the list is shown and run two at a time. */
    const harnessQueue = [];
    let harnessRunning = 0;
    let listShown = false;

    function harnessSoon(a) {
        if (harnessQueue.indexOf(a) < 0) harnessQueue.push(a);
        pumpHarness();
    }

    function pumpHarness() {
        while (listShown && harnessRunning < 2 && harnessQueue.length) {
            harnessRunning++;
            readHarness(harnessQueue.shift()).finally(() => { harnessRunning--; pumpHarness() });
        }
    }

    function readHarness(a) {
        if (a.props.ActiveState !== "active" || !agents.has(a.name)) {
            a.harness = "-";
            return Promise.resolve();
        }
        return cockpit.spawn(["systemctl", "-M", a.machine, "show", "-p", "ActiveState,SubState,NRestarts", "hive-harness.service"],
            { superuser: "try", err: "ignore" })
                .then(out => {
                    const p = {};
                    for (const line of out.split("\n")) {
                        const i = line.indexOf("=");
                        if (i > 0) p[line.slice(0, i)] = line.slice(i + 1);
                    }
                    a.harness = p.ActiveState ? p.ActiveState + " (" + p.SubState + "), " + p.NRestarts + " restarts" : "-";
                    render(a);
                })
                .catch(() => { a.harness = "-"; render(a) });
    }

    /* What the page shows of a unit; everything else systemd holds is never fetched (a
       proxy per unit would read all of its ~300 properties, seconds for 50 agents). */
    const UNIT_PROPS = ["ActiveState", "SubState"];
    const SERVICE_PROPS = ["NRestarts", "MemoryMax", "TasksMax", "CPUWeight"];
    const byPath = new Map();

    function changed(a) {
        render(a);
        const now = a.props.ActiveState + "/" + a.props.SubState;
        if (now !== a.lastState) { a.lastState = now; harnessSoon(a) }
    }

    /* One match for every unit's PropertiesChanged (systemd sends them once some client
       has called Subscribe, as hive-c0re and this page do); those of agent units update
       their rows. */
    function onPropertiesChanged(path, iface, signal, args) {
        const a = byPath.get(path);
        if (!a) return;
        let any = false;
        for (const [k, v] of Object.entries(args[1] || {})) {
            if (UNIT_PROPS.indexOf(k) < 0 && SERVICE_PROPS.indexOf(k) < 0) continue;
            a.props[k] = v && v.v !== undefined ? v.v : v;
            a.changedSince[k] = true; // newer than a read still on its way
            any = true;
        }
        if (any) changed(a);
    }

    function getProps(path, iface, names) {
        return Promise.all(names.map(n =>
            hh.systemd.call(path, "org.freedesktop.DBus.Properties", "Get", [iface, n])
                    .then(r => [n, r[0].v], () => [n, undefined])));
    }

    function watchUnit(a, path, states) {
        if (a.path) byPath.delete(a.path);
        a.path = path;
        byPath.set(path, a);
        const unit = states ? Promise.resolve([["ActiveState", states[0]], ["SubState", states[1]]])
            : getProps(path, "org.freedesktop.systemd1.Unit", UNIT_PROPS);
        return Promise.all([unit, getProps(path, "org.freedesktop.systemd1.Service", SERVICE_PROPS)]).then(lists => {
            for (const [k, v] of lists[0].concat(lists[1]))
                if (v !== undefined && !(k in a.changedSince)) a.props[k] = v;
            a.changedSince = {};
            changed(a);
        });
    }

    function add(name, path, states) {
        let a = agents.get(name);
        if (!a) {
            a = { name: name, unit: unitOf(name), machine: "h-" + name, crash: null, exits: {}, props: {}, changedSince: {} };
            agents.set(name, a);
        }
        if (path && path === a.path) return Promise.resolve();
        const found = path ? Promise.resolve([path])
            : hh.systemd.call(hh.SYSTEMD_PATH, hh.SYSTEMD_IFACE, "LoadUnit", [a.unit]);
        return found.then(r => watchUnit(a, r[0], states)).catch(() => render(a));
    }

    function remove(name) {
        const a = agents.get(name);
        if (!a) return;
        if (a.row) a.row.remove();
        agents.delete(name);
        document.getElementById("agents-empty").hidden = agents.size > 0;
    }

    /* PID 1's "Main process exited" and "Failed with result" entries for agent units, the
       newest failure per unit with its own invocation's exit, like src/cli/crash.rs. */
    function followCrashes() {
        hh.journal(["--follow", "--lines=1000", "_PID=1", "MESSAGE_ID=" + PROCESS_EXIT, "MESSAGE_ID=" + FAILURE_RESULT], crashEntry);
    }

    function crashEntry(e) {
        const name = nameOf(hh.field(e, "UNIT"));
        if (!name) return;
        const a = agents.get(name);
        if (!a) return;
        const inv = hh.field(e, "INVOCATION_ID");
        if (hh.field(e, "MESSAGE_ID") === PROCESS_EXIT) {
            const cmd = hh.field(e, "COMMAND");
            if (cmd && cmd !== "ExecStart") return;
            a.exits[inv] = { code: hh.field(e, "EXIT_CODE"), status: hh.field(e, "EXIT_STATUS") };
            // The two entries may reach a follower in either order.
            if (a.crash && a.crash.invocation === inv) {
                a.crash.exit_code = a.exits[inv].code;
                a.crash.exit_status = a.exits[inv].status;
                render(a);
            }
            return;
        }
        const exit = a.exits[inv] || { code: "", status: "" };
        a.crash = {
            at: Number(hh.field(e, "__REALTIME_TIMESTAMP")), result: hh.field(e, "UNIT_RESULT"),
            exit_code: exit.code, exit_status: exit.status, invocation: inv
        };
        render(a);
        // A follower does not always see the exit entry written just before (journalctl
        // --follow on a freshly booted host has skipped it): ask for it by invocation.
        if (!a.exits[inv] && inv) {
            hh.journal(["_PID=1", "MESSAGE_ID=" + PROCESS_EXIT, "INVOCATION_ID=" + inv, "UNIT=" + a.unit], crashEntry);
        }
    }

    /* The daemon's events about an agent (its harness re-created after a container
       restart, crashed, connected…) are when the harness's state is worth reading again. */
    function followDaemon() {
        hh.journal(["--follow", "--lines=0", "SYSLOG_IDENTIFIER=hive-c0re"], function (e) {
            const a = agents.get(hh.field(e, "HIVE_AGENT"));
            if (a) readHarness(a);
        });
    }

    hh.loadAgents = function () {
        hh.systemd.call(hh.SYSTEMD_PATH, hh.SYSTEMD_IFACE, "Subscribe", []).catch(() => {});
        hh.hive.subscribe({ interface: hh.MANAGER_IFACE, member: "AgentNew" }, (path, iface, sig, args) => add(args[0]));
        hh.hive.subscribe({ interface: hh.MANAGER_IFACE, member: "AgentRemoved" }, (path, iface, sig, args) => {
            // The agent's unit may outlive its spec for a moment; the row goes with the spec.
            remove(args[0]);
        });
        // A unit loaded again after it was collected (start after stop) gets a fresh watch.
        hh.systemd.subscribe({ interface: hh.SYSTEMD_IFACE, member: "UnitNew" }, (path, iface, sig, args) => {
            const name = nameOf(args[0]);
            if (name && agents.has(name)) agents.get(name).path = null, add(name, args[1]);
            else if (name) add(name, args[1]);
        });
        hh.systemd.subscribe({ interface: "org.freedesktop.DBus.Properties", member: "PropertiesChanged",
            path_namespace: "/org/freedesktop/systemd1/unit" }, onPropertiesChanged);
        const listed = hh.call("ListAgents", []).then(r => r[0].map(x => x[0])).catch(() => []);
        const units = hh.systemd.call(hh.SYSTEMD_PATH, hh.SYSTEMD_IFACE, "ListUnitsByPatterns", [[], ["hive-agent-*.service"]])
                .then(r => r[0]).catch(() => []);
        return Promise.all([listed, units]).then(([names, rows]) => {
            const paths = {};
            const states = {};
            for (const r of rows) { const n = nameOf(r[0]); if (n) { paths[n] = r[6]; states[n] = [r[3], r[4]] } }
            const all = new Set(names.filter(n => hh.NAME_RE.test(n)).concat(Object.keys(paths)));
            document.getElementById("agents-empty").hidden = all.size > 0;
            followCrashes();
            followDaemon();
            return Promise.all(Array.from(all).sort().map(n => add(n, paths[n], states[n])));
        }).finally(() => { listShown = true; pumpHarness() });
    };
})();
