/* Approvals: the pending ones first, each with what `hivectl approvals --show` shows (who
   asked and when, the request, the spec diff, the host checks, the unit property diff)
   and approve/deny with a note; then the decided ones, newest first, a page at a time
   (ListApprovalsPage). Kept live by ApprovalNew/ApprovalChanged. The bus decides who may
   see and decide (root and hive-admin); anyone else reads its refusal in plain words. */
"use strict";

(function () {
    const hh = window.hh;
    const PAGE = 100;
    /* Decided pages are windows of ids, newest first: ids are handed out in order and an
       approval is never deleted, so (top - PAGE, top] holds exactly PAGE approvals and
       ListApprovalsPage(all, top - PAGE, PAGE) reads them; LastApprovalId is the newest.
       `top` follows the newest id unless the admin paged to older ones. */
    const decided = { top: 0, newest: 0, following: true };

    function record(r) {
        return {
            id: r[0], agent: r[1], kind: r[2], payload: r[3], status: r[4], note: r[5],
            decided_by: r[6], created_at: r[7], decided_at: r[8], finished_at: r[9]
        };
    }

    function refused(err) {
        const box = document.getElementById("approvals-refused");
        box.textContent = hh.plainError(err, "see or decide approvals");
        box.hidden = false;
    }

    function diffLine(line) {
        const cls = line.startsWith("+") ? "hh-diff-add" : line.startsWith("-") ? "hh-diff-del" : null;
        return hh.el("span", { class: cls }, line + "\n");
    }

    function shownDetails(card, shown) {
        const details = card.querySelector(".hh-details");
        const parts = [hh.el("p", {}, "Requested by agent ", hh.el("b", {}, shown.requested_by), " at " + hh.fmtUsec(shown.requested_at))];
        if (shown.refused) {
            parts.push(hh.el("p", { class: "hh-check-fail hh-would-refuse" }, "Would be refused now: " + shown.refused));
            hh.replace(details, ...parts);
            return;
        }
        parts.push(hh.el("h4", {}, "Spec diff"),
            hh.el("pre", { class: "hh-pre hh-spec-diff" }, ...(shown.spec_diff || []).map(diffLine)));
        const plan = shown.plan || {};
        parts.push(hh.el("h4", {}, "Host checks"),
            hh.el("ul", { class: "hh-checks" }, ...(plan.checks || []).map(c =>
                hh.el("li", { class: "hh-check-" + c.verdict }, c.verdict + " " + c.what + ": " + c.detail))));
        const diff = plan.diff || [];
        parts.push(hh.el("h4", {}, "If approved: " + (plan.action || "") + (plan.reason ? " (" + plan.reason + ")" : "")),
            diff.length
                ? hh.el("table", { class: "hh-table hh-unit-diff" },
                    hh.el("thead", {}, hh.el("tr", {}, hh.el("th", {}, "Unit property"), hh.el("th", {}, "Live"), hh.el("th", {}, "Planned"))),
                    hh.el("tbody", {}, ...diff.map(d => hh.el("tr", {},
                        hh.el("td", {}, d.property),
                        hh.el("td", { class: "hh-diff-del" }, d.live === null ? "(not set)" : d.live),
                        hh.el("td", { class: "hh-diff-add" }, d.planned === null ? "(not set)" : d.planned)))))
                : hh.el("p", { class: "hh-muted" }, "No unit property changes."));
        hh.replace(details, ...parts);
    }

    function decide(card, a, verb) {
        const note = card.querySelector(".hh-note").value;
        for (const b of card.querySelectorAll("button")) b.disabled = true;
        hh.alert("");
        hh.call(verb, [a.id, note]).then(r => {
            const done = record(r[0]);
            hh.alert("approval " + done.id + " of agent " + done.agent + ": " + done.status + (done.note ? ": " + done.note : ""));
            loadPending();
            loadDecided();
        }).catch(e => {
            for (const b of card.querySelectorAll("button")) b.disabled = false;
            hh.alert(hh.plainError(e, (verb === "Approve" ? "approve" : "deny") + " approval " + a.id));
        });
    }

    function pendingCard(a) {
        const card = hh.el("div", { class: "hh-card hh-pending", "data-approval": a.id, "data-agent": a.agent },
            hh.el("h3", {}, "#" + a.id + " " + a.kind + " asked by agent " + a.agent + " at " + hh.fmtUsec(a.created_at)),
            hh.el("p", {}, "Request: ", hh.el("code", { class: "hh-payload" }, a.payload)),
            hh.el("div", { class: "hh-details" }, hh.el("p", { class: "hh-muted" }, "Reading what approving would do…")),
            hh.el("p", {},
                hh.el("input", { class: "hh-note", type: "text", placeholder: "note kept with the decision" })),
            hh.el("p", {},
                hh.el("button", { class: "hh-btn hh-btn-primary hh-approve", type: "button", onclick: () => decide(card, a, "Approve") }, "Approve"),
                hh.el("button", { class: "hh-btn hh-btn-danger hh-deny", type: "button", onclick: () => decide(card, a, "Deny") }, "Deny")));
        hh.call("ShowApproval", [a.id]).then(r => shownDetails(card, JSON.parse(r[0]))).catch(e =>
            hh.replace(card.querySelector(".hh-details"), hh.el("p", { class: "hh-check-fail" }, hh.plainError(e, "show approval " + a.id))));
        return card;
    }

    function loadPending() {
        return hh.call("ListApprovals", [false]).then(r => {
            document.getElementById("approvals-refused").hidden = true;
            const rows = r[0].map(record).filter(a => a.status === "pending");
            const list = document.getElementById("pending-list");
            // Cards already shown keep their note and details; new ones are added in order.
            const keep = {};
            for (const c of list.children) keep[c.getAttribute("data-approval")] = c;
            hh.replace(list, ...rows.map(a => keep[a.id] || pendingCard(a)));
            document.getElementById("pending-empty").hidden = rows.length > 0;
            document.getElementById("pending-count").textContent = rows.length ? String(rows.length) : "";
        }).catch(e => {
            refused(e);
            hh.replace(document.getElementById("pending-list"));
        });
    }

    function loadDecided() {
        return hh.call("LastApprovalId", []).then(r => {
            const newest = r[0];
            decided.newest = newest;
            if (decided.following || decided.top > newest) decided.top = newest;
            const after = Math.max(decided.top - PAGE, 0);
            return hh.call("ListApprovalsPage", [true, after, PAGE]).then(r => {
                const rows = r[0].map(record).filter(a => a.status !== "pending" && a.id <= decided.top).reverse();
                hh.replace(document.getElementById("decided-body"), ...rows.map(a =>
                    hh.el("tr", { "data-approval": a.id, "data-status": a.status },
                        hh.el("td", {}, String(a.id)), hh.el("td", {}, a.agent), hh.el("td", {}, a.kind),
                        hh.el("td", { class: "hh-status" }, a.status), hh.el("td", {}, hh.fmtUsec(a.created_at)),
                        hh.el("td", {}, a.decided_by || "-"), hh.el("td", {}, a.note))));
                document.getElementById("decided-page").textContent = decided.top
                    ? "ids " + (after + 1) + "–" + decided.top + " of " + newest + ", newest first" : "none yet";
                document.getElementById("decided-prev").disabled = decided.top >= newest;
                document.getElementById("decided-next").disabled = after <= 0;
            });
        }).catch(e => {
            hh.replace(document.getElementById("decided-body"));
            if (hh.isDenied(e)) refused(e);
        });
    }

    hh.loadApprovals = function () {
        hh.hive.subscribe({ interface: hh.MANAGER_IFACE, member: "ApprovalNew" }, () => loadPending());
        hh.hive.subscribe({ interface: hh.MANAGER_IFACE, member: "ApprovalChanged" }, () => { loadPending(); loadDecided() });
        // "Newer" and "Older": a window of PAGE ids up or down.
        document.getElementById("decided-next").addEventListener("click", () => {
            decided.top = Math.max(decided.top - PAGE, 1);
            decided.following = false;
            loadDecided();
        });
        document.getElementById("decided-prev").addEventListener("click", () => {
            decided.top = Math.min(decided.top + PAGE, decided.newest);
            decided.following = decided.top >= decided.newest;
            loadDecided();
        });
        return Promise.all([loadPending(), loadDecided()]);
    };
})();
