/* One agent's page: its status as `hivectl status` prints it (run through the bridge, so
   it is hivectl's own text), its journal (HIVE_AGENT= plus systemd's lines about its
   units, as `hivectl logs` selects them) followed live, its spec, and a command box that
   runs in the container over machined (`systemd-run -M … --pipe`). */
"use strict";

(function () {
    const hh = window.hh;
    let current = null; // {name, journal, lastKey}

    function specPaths(name) {
        return ["/var/lib/hyperhive/agents/" + name + "/spec.toml", "/etc/hyperhive/agents/" + name + ".toml"];
    }

    function readSpec(name) {
        const out = document.getElementById("agent-spec");
        out.textContent = "…";
        const tryRead = function (paths) {
            if (!paths.length) { out.textContent = "no spec readable here (" + specPaths(name).join(", ") + ")"; return }
            const f = cockpit.file(paths[0], { superuser: "try" });
            f.read().then(text => {
                f.close();
                if (text === null) return tryRead(paths.slice(1));
                out.textContent = "# " + paths[0] + "\n" + text;
            }).catch(e => { f.close(); out.textContent = paths[0] + ": " + e.message });
        };
        tryRead(specPaths(name));
    }

    function readStatus(name) {
        const out = document.getElementById("agent-status");
        cockpit.spawn(["hivectl", "status", name], { superuser: "try", err: "message", environ: ["SYSTEMD_COLORS=0"] })
                .then(text => { if (current && current.name === name) out.textContent = text })
                .catch(e => {
                    if (current && current.name === name)
                        out.textContent = e.problem === "not-found"
                            ? "hivectl is not on the PATH of Cockpit's bridge"
                            : (e.message || String(e));
                });
    }

    function journalLine(e) {
        const ident = hh.field(e, "SYSLOG_IDENTIFIER") || hh.field(e, "_COMM");
        const pid = hh.field(e, "_PID");
        return hh.fmtUsec(hh.field(e, "__REALTIME_TIMESTAMP")) + " " + hh.field(e, "_HOSTNAME") + " " +
            ident + (pid ? "[" + pid + "]" : "") + ": " + hh.field(e, "MESSAGE") + "\n";
    }

    function followJournal(name) {
        const out = document.getElementById("agent-journal");
        out.textContent = "";
        return hh.journal(["--merge", "--follow", "--lines=50", "HIVE_AGENT=" + name,
            "+", "_PID=1", "UNIT=hive-agent-" + name + ".service",
            "+", "_PID=1", "UNIT=hive-harness.service", "_HOSTNAME=h-" + name], function (e) {
            const stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
            out.append(document.createTextNode(journalLine(e)));
            while (out.childNodes.length > 500) out.firstChild.remove();
            if (stick) out.scrollTop = out.scrollHeight;
        });
    }

    hh.showAgent = function (name) {
        hh.leaveAgent();
        if (!hh.NAME_RE.test(name)) {
            document.getElementById("agent-title").textContent = "No such agent name: " + name;
            return;
        }
        current = { name: name, lastKey: null };
        document.getElementById("agent-title").textContent = name;
        hh.replace(document.getElementById("agent-actions"), ...hh.actionButtons(name));
        document.getElementById("agent-run-out").hidden = true;
        readStatus(name);
        readSpec(name);
        current.journal = followJournal(name);
    };

    hh.leaveAgent = function () {
        if (current && current.journal) current.journal.close();
        current = null;
    };

    // The status is read again whenever systemd says the container's state changed.
    hh.on("agent", function (a) {
        if (!current || current.name !== a.name) return;
        const p = a.props;
        const key = [p.ActiveState, p.SubState, p.NRestarts, a.crash && a.crash.invocation, a.harness].join("/");
        if (key === current.lastKey) return;
        current.lastKey = key;
        readStatus(a.name);
    });

    document.addEventListener("DOMContentLoaded", function () {
        document.getElementById("agent-run").addEventListener("submit", function (ev) {
            ev.preventDefault();
            if (!current) return;
            const cmd = document.getElementById("agent-run-cmd").value;
            const out = document.getElementById("agent-run-out");
            out.hidden = false;
            out.textContent = "$ " + cmd + "\n";
            cockpit.spawn(["systemd-run", "-M", "h-" + current.name, "--wait", "--pipe", "--quiet", "--", "sh", "-c", cmd],
                { superuser: "try", err: "out" })
                    .stream(data => out.append(document.createTextNode(data)))
                    .catch(e => out.append(document.createTextNode("[" + (e.message || e.problem || e) + "]\n")));
        });
    });
})();
