/*
 * chat.js: the chat page. It joins a room, shows the room's stored history,
 * long-polls for what others say, and sends each message exactly once, even
 * across network failures and reloads.
 *
 * Protocol (all JSON; any failure is a non-2xx status with
 * {"error": "<sentence>"}, from the backend or nginx, or no answer at all):
 *   POST ./ {"message", "room", "client_id"}
 *        -> {"message": reply, "room", "entries": [entry...], "next": seq}
 *        The same client_id in the same room is stored once: a retry gets
 *        the first answer back, so a message can be re-sent until answered.
 *   GET ./messages?room=R&limit=N             the newest N entries
 *   GET ./messages?room=R&after=SEQ&wait=S    entries after SEQ, held up to
 *        S seconds until there is one -> {"entries": [...], "next": seq};
 *        {"busy": true, "retry_after": s} when the server holds too many.
 *   entry: {"seq", "role": "user"|"bot", "text", "time", "client_id"}
 *   A server without history (--store none) answers 404 there; the page
 *   then posts {"message"} alone, as the stateless chat does.
 *
 * Rooms: ?room=NAME joins NAME; a plain /chat/ joins a private room whose
 * random name is kept in localStorage, so a reload finds it again.
 * localStorage also keeps, per room, the messages not yet stored (the
 * outbox) and the newest entries seen (shown at once on a reload, then
 * replaced by the server's).
 *
 * Stable hooks for tests (keep them when restyling):
 *   #chat             the form; #message its text input
 *   #log              the message list (role="log", aria-live="polite")
 *   .msg.user         a message sent from this browser; .msg.bot a reply;
 *   .msg.other        a message someone else sent to the room
 *   .msg[data-seq]    a message the server stored, with its number
 *   .msg.pending      a message of ours not yet confirmed by the server
 *   .msg.failed       a message the server refused (4xx)
 *   .msg .text        the message text (always set with textContent)
 *   .msg .error       the error sentence of a failed message
 *   .msg button.retry sends a failed message again
 *   .msg button.discard   forgets a message the server refused
 *   #room-name, #room-link, #room-copy   the room, its link, copy button
 *   #connection       "Reconnecting…" while the server cannot be reached
 *   #notice           why the page did not join the room asked for
 *   <html data-chat-mode="connecting|room|stateless">
 *   <html data-chat-connection="ok|reconnecting">
 *   <html data-chat-errors="[...]">  JSON list of CSP violations and script
 *                     errors seen by the page; "[]" once chat.js has run.
 *
 * CSP: no inline script or style, no eval, no element.style: only classes.
 */
(function () {
  'use strict';

  var SEND_TIMEOUT_MS = 15000;     // a post not answered by then is retried
  var POLL_WAIT_S = 25;            // the server holds a poll up to this long
  // Past the hold, nginx and the network get 10 s before the poll counts as lost.
  var POLL_TIMEOUT_MS = (POLL_WAIT_S + 10) * 1000;
  var HISTORY_LIMIT = 100;         // entries shown on load
  var BACKOFF_FIRST_MS = 500;      // after a failure, wait this long, doubling...
  var BACKOFF_MAX_MS = 10000;      // ...up to this
  var QUICK_EMPTY_MS = 500;        // an empty poll answered faster than this...
  var QUICK_EMPTY_PAUSE_MS = 1000; // ...is not repeated sooner than this
  var LOG_MAX = 1000;              // messages kept on the page
  var ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

  var KEY_PRIVATE_ROOM = 'chat-fcgi.private-room';
  var KEY_AUTHOR = 'chat-fcgi.author';
  var KEY_OUTBOX = 'chat-fcgi.outbox.'; // + room: messages not yet stored
  var KEY_HISTORY = 'chat-fcgi.history.'; // + room: the newest entries seen

  var NO_SERVER = 'The server could not be reached.';
  var TOO_SLOW = 'The server did not answer in time.';
  var BAD_ANSWER = 'The server sent an answer this page does not understand.';

  // Record problems where a test (or a curious human) can read them. This
  // runs before the body is parsed, so violations caused by the markup count.
  var problems = [];
  function recordProblem(text) {
    problems.push(String(text));
    document.documentElement.dataset.chatErrors = JSON.stringify(problems);
  }
  document.documentElement.dataset.chatErrors = '[]';
  document.addEventListener('securitypolicyviolation', function (e) {
    recordProblem('CSP ' + e.effectiveDirective + ' blocked ' +
                  (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':' + e.lineNumber);
  });
  window.addEventListener('error', function (e) {
    recordProblem('error: ' + e.message + ' at ' + e.filename + ':' + e.lineno);
  });
  window.addEventListener('unhandledrejection', function (e) {
    recordProblem('unhandled rejection: ' + e.reason);
  });

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }

  // localStorage may be missing, full or refused (private modes, quotas):
  // the chat still works, it just forgets on reload.
  function load(key) {
    try {
      return JSON.parse(localStorage.getItem(key));
    } catch (e) {
      return null;
    }
  }
  function store(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, JSON.stringify(value));
    } catch (e) { /* not kept; nothing else to do */ }
  }

  function randomHex(bytes) {
    var a = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.prototype.map.call(a, function (b) {
      return (b < 16 ? '0' : '') + b.toString(16);
    }).join('');
  }

  // Waits that double after each failure, with jitter so that many pages
  // cut off together do not come back in step.
  function Backoff() { this.failures = 0; }
  Backoff.prototype.next = function () {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, this.failures));
    this.failures = Math.min(this.failures + 1, 16);
    return Math.min(BACKOFF_MAX_MS, base * (0.75 + 0.5 * Math.random()));
  };
  Backoff.prototype.reset = function () { this.failures = 0; };

  function start() {
    var root = document.documentElement;
    var form = document.getElementById('chat');
    var input = document.getElementById('message');
    var log = document.getElementById('log');
    var connection = document.getElementById('connection');
    // The page's own directory (/chat/ for /chat/ or /chat/index.html),
    // without any query string.
    var endpoint = new URL('./', location.href).href;
    var messagesURL = new URL('messages', endpoint).href;
    var smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;

    // Who "we" are: our messages carry client ids that start with this, so
    // they show as ours in every tab of this browser, and others' do not.
    var author = load(KEY_AUTHOR);
    if (typeof author !== 'string' || !/^[0-9a-f]{12}$/.test(author)) {
      author = randomHex(6);
      store(KEY_AUTHOR, author);
    }

    var room = chooseRoom();
    var outboxKey = KEY_OUTBOX + room;
    var historyKey = KEY_HISTORY + room;
    var mode = 'connecting'; // until the server says whether it keeps history
    var cursor = null;       // the seq to poll after; null: history not loaded
    var bySeq = new Map();   // seq -> .msg shown for it
    var byClient = new Map(); // client_id -> {user: .msg, bot: .msg}
    var outbox = [];         // {id, text, error?}: ours, not yet stored, in order
    var done = new Set();    // outbox ids this tab saw stored
    var recent = new Map();  // seq -> entry shown, to keep the newest for a reload
    var unconfirmed = new Set(); // seqs shown from the saved history only
    var trouble = { poll: false, send: false };
    var pollBackoff = new Backoff();
    var sendBackoff = new Backoff();
    var pollTimer = null, sendTimer = null, pollAbort = null;
    var sending = false;
    var atEnd = true;

    setMode('connecting');
    setConnection();
    showRoom();
    keepNewestInView();
    restoreHistory();
    restoreOutbox();
    poll();
    pump();

    // With an IME (Korean, Japanese, ...) Enter first commits the composed
    // word. That keydown must not submit the form, or the word would be sent
    // unfinished (and, in some browsers, a second time once committed).
    // keyCode 229 covers Safari, which ends the composition before keydown.
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && (e.isComposing || e.keyCode === 229)) {
        e.preventDefault();
      }
    });

    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var text = input.value;
      if (text.trim() === '') return; // nothing worth sending; keep it as typed
      input.value = '';
      input.focus();
      if (mode === 'stateless') {
        var msg = addMessage('user', text);
        sendStateless(msg, text);
        reveal(msg);
        return;
      }
      var item = { id: author + '-' + randomHex(8), text: text };
      outbox.push(item);
      saveOutbox();
      reveal(showOutgoing(item));
      pump();
    });

    log.addEventListener('click', function (e) {
      var button = e.target.closest('button.retry, button.discard');
      if (!button) return;
      var msg = button.closest('.msg');
      input.focus(); // the button is about to go away; keep focus useful
      var item = outbox.find(function (i) { return i.id === msg.dataset.clientId; });
      if (button.classList.contains('discard')) {
        if (item) {
          outbox.splice(outbox.indexOf(item), 1);
          done.add(item.id);
          saveOutbox();
        }
        msg.remove();
        return;
      }
      if (mode !== 'stateless' && item) {
        delete item.error;
        saveOutbox();
        setState(msg, 'pending');
        pump();
      } else {
        sendStateless(msg, msg.querySelector('.text').textContent);
      }
    });

    // Back online: try at once rather than at the end of the current wait.
    window.addEventListener('online', retryNow);

    document.getElementById('room-copy').addEventListener('click', copyRoomLink);

    // --- The room ------------------------------------------------------------

    // ?room=NAME if it is a valid name; else this browser's private room.
    function chooseRoom() {
      var asked = new URLSearchParams(location.search).get('room');
      if (asked !== null && ROOM_NAME.test(asked)) return asked;
      if (asked !== null) {
        var shown = asked.length > 70 ? asked.slice(0, 70) + '…' : asked;
        var notice = document.getElementById('notice');
        notice.textContent = '“' + shown + '” is not a room name (1 to 64 letters, ' +
          'digits, - or _), so this is your private room.';
        notice.hidden = false;
        // Do not carry the bad name into bookmarks and reloads.
        history.replaceState(null, '', endpoint);
      }
      var mine = load(KEY_PRIVATE_ROOM);
      if (typeof mine !== 'string' || !ROOM_NAME.test(mine)) {
        mine = 'p-' + randomHex(10);
        store(KEY_PRIVATE_ROOM, mine);
      }
      return mine;
    }

    function showRoom() {
      var url = new URL('./?room=' + encodeURIComponent(room), endpoint).href;
      document.getElementById('room-name').textContent = room;
      var link = document.getElementById('room-link');
      link.href = url;
      link.textContent = url;
    }

    function copyRoomLink() {
      var button = document.getElementById('room-copy');
      var link = document.getElementById('room-link');
      function said(text) {
        button.textContent = text;
        setTimeout(function () { button.textContent = 'Copy link'; }, 2000);
      }
      // The clipboard needs a secure context; elsewhere the link is selected
      // for the reader to copy.
      var copying = navigator.clipboard && window.isSecureContext
        ? navigator.clipboard.writeText(link.href) : Promise.reject(new Error('no clipboard'));
      copying.then(function () { said('Copied'); }, function () {
        window.getSelection().selectAllChildren(link);
        said('Selected');
      });
    }

    function setMode(m) {
      mode = m;
      root.dataset.chatMode = m;
      document.getElementById('room').hidden = m === 'stateless';
    }

    // --- Connection state ----------------------------------------------------

    function setTrouble(what, on) {
      if (trouble[what] === on) return;
      trouble[what] = on;
      setConnection();
    }

    function setConnection() {
      var down = mode !== 'stateless' && (trouble.poll || trouble.send);
      root.dataset.chatConnection = down ? 'reconnecting' : 'ok';
      connection.textContent = down ? 'Reconnecting…' : '';
      connection.hidden = !down;
      // Queued messages say why they wait.
      log.querySelectorAll('.msg.pending .note').forEach(function (note) {
        note.textContent = down ? 'queued' : 'sending…';
      });
    }

    function retryNow() {
      if (pollTimer !== null) {
        clearTimeout(pollTimer);
        pollTimer = null;
        poll();
      }
      if (sendTimer !== null) {
        clearTimeout(sendTimer);
        sendTimer = null;
        pump();
      }
    }

    // --- Receiving: history, then long-polls ---------------------------------

    function poll() {
      pollTimer = null;
      if (mode === 'stateless') return;
      var first = cursor === null;
      var url = messagesURL + '?room=' + encodeURIComponent(room) + (first
        ? '&limit=' + HISTORY_LIMIT
        : '&after=' + cursor + '&wait=' + POLL_WAIT_S);
      var began = Date.now();
      if (first) log.setAttribute('aria-busy', 'true');
      pollAbort = new AbortController();
      call('GET', url, null, POLL_TIMEOUT_MS, pollAbort).then(function (r) {
        pollAbort = null;
        if (mode === 'stateless') return;
        if (r.status === 404) {
          goStateless();
          return;
        }
        var data = r.data;
        var good = r.ok && data && Array.isArray(data.entries) && Number.isSafeInteger(data.next);
        if (!good) {
          setTrouble('poll', true);
          pollTimer = setTimeout(poll, pollBackoff.next());
          return;
        }
        if (mode === 'connecting') setMode('room');
        pollBackoff.reset();
        var wasDown = trouble.poll;
        setTrouble('poll', false);
        if (wasDown) retryNow(); // the server is back: send what waits now
        if (first) forgetUnconfirmed(data.entries);
        showEntries(data.entries, first);
        if (first) {
          log.removeAttribute('aria-busy');
          log.scrollTop = log.scrollHeight; // the newest at once, no animation
          pump();
        }
        cursor = data.next;
        var pause = 0;
        if (data.busy === true) {
          var s = Number(data.retry_after);
          pause = 1000 * (s >= 1 && s <= 30 ? s : 1);
        } else if (!first && data.entries.length === 0 && Date.now() - began < QUICK_EMPTY_MS) {
          pause = QUICK_EMPTY_PAUSE_MS; // the server did not hold it: no busy loop
        }
        if (pause) pollTimer = setTimeout(poll, pause);
        else poll();
      });
    }

    function showEntries(entries, quietly) {
      var newest = null;
      entries.forEach(function (e) {
        var li = showEntry(e);
        if (li) newest = li;
      });
      trimLog();
      if (newest) saveHistory();
      if (newest && !quietly && atEnd) reveal(log.lastElementChild);
    }

    // The saved history lets a reload without a server still show the
    // conversation; the server's answer replaces it once it comes.
    function restoreHistory() {
      var saved = load(historyKey);
      if (!Array.isArray(saved)) return;
      showEntries(saved.filter(function (e) {
        return e && Number.isSafeInteger(e.seq);
      }), true);
      saved.forEach(function (e) { if (bySeq.has(e.seq)) unconfirmed.add(e.seq); });
      log.scrollTop = log.scrollHeight;
    }

    function saveHistory() {
      var seqs = Array.from(recent.keys()).sort(function (x, y) { return x - y; });
      store(historyKey, seqs.slice(-HISTORY_LIMIT).map(function (seq) { return recent.get(seq); }));
    }

    // The server's newest entries are the truth: a saved entry not among
    // them was pushed out by newer ones, or the store lost it.
    function forgetUnconfirmed(entries) {
      entries.forEach(function (e) { if (e) unconfirmed.delete(e.seq); });
      unconfirmed.forEach(function (seq) { forget(bySeq.get(seq)); });
      unconfirmed.clear();
    }

    function forget(li) {
      if (!li) return;
      var seq = Number(li.dataset.seq);
      bySeq.delete(seq);
      recent.delete(seq);
      var seen = li.dataset.clientId && byClient.get(li.dataset.clientId);
      if (seen) {
        ['user', 'bot'].forEach(function (role) { if (seen[role] === li) delete seen[role]; });
        if (!seen.user && !seen.bot) byClient.delete(li.dataset.clientId);
      }
      li.remove();
    }

    // Shows one stored entry once: a seq already shown is skipped, and an
    // entry of ours (by client id) takes over the bubble shown while it was
    // on its way. Returns the bubble, or null when nothing was new.
    function showEntry(e) {
      if (!e || typeof e !== 'object' || !Number.isSafeInteger(e.seq) ||
          typeof e.text !== 'string' || (e.role !== 'user' && e.role !== 'bot')) {
        return null;
      }
      if (bySeq.has(e.seq)) return null;
      var id = typeof e.client_id === 'string' && e.client_id !== '' ? e.client_id : null;
      var seen = id && byClient.get(id);
      var li = seen && seen[e.role];
      if (li && li.dataset.seq !== undefined) return null; // the same message again
      if (!li) {
        var who = e.role === 'bot' ? 'bot' : id && id.indexOf(author + '-') === 0 ? 'user' : 'other';
        li = addMessage(who, e.text);
        if (id) {
          li.dataset.clientId = id;
          seen = seen || {};
          seen[e.role] = li;
          byClient.set(id, seen);
        }
      }
      if (id && e.role === 'user') stored(id, li);
      li.dataset.seq = String(e.seq);
      if (typeof e.time === 'string') li.title = new Date(e.time).toLocaleString();
      bySeq.set(e.seq, li);
      recent.set(e.seq, { seq: e.seq, role: e.role, text: e.text, time: e.time, client_id: id });
      placeBySeq(li, e.seq);
      return li;
    }

    // Stored entries in seq order, then ours still on their way.
    function placeBySeq(li, seq) {
      for (var el = log.lastElementChild; el; el = el.previousElementSibling) {
        if (el !== li && el.dataset.seq !== undefined && Number(el.dataset.seq) < seq) {
          if (el.nextElementSibling !== li) el.after(li);
          return;
        }
      }
      if (log.firstElementChild !== li) log.prepend(li);
    }

    function trimLog() {
      while (log.children.length > LOG_MAX && log.firstElementChild.dataset.seq !== undefined) {
        forget(log.firstElementChild);
      }
    }

    // --- Sending: the outbox, in order, one at a time ------------------------

    // The bubble for an outbox item, marked pending (or failed).
    function showOutgoing(item) {
      var li = addMessage('user', item.text);
      li.dataset.clientId = item.id;
      byClient.set(item.id, { user: li });
      if (item.error) setState(li, 'failed', item.error);
      else setState(li, 'pending');
      return li;
    }

    function pump() {
      sendTimer = null;
      if (sending || mode === 'stateless') return;
      var item = outbox.find(function (i) { return !i.error; });
      if (!item) {
        setTrouble('send', false);
        return;
      }
      sending = true;
      var body = { message: item.text, room: room, client_id: item.id };
      call('POST', endpoint, body, SEND_TIMEOUT_MS, null).then(function (r) {
        sending = false;
        if (mode === 'stateless') return;
        if (r.status === 404) {
          goStateless();
          return;
        }
        if (r.retry) {
          // Not stored, or not known to be: the same client id again later
          // is stored at most once.
          setTrouble('send', true);
          sendTimer = setTimeout(pump, sendBackoff.next());
          return;
        }
        sendBackoff.reset();
        setTrouble('send', false);
        if (r.ok) {
          if (mode === 'connecting') setMode('room');
          answered(item, r.data);
        } else {
          item.error = r.error;
          saveOutbox();
          var li = byClient.get(item.id) && byClient.get(item.id).user;
          if (li) {
            setState(li, 'failed', r.error);
            reveal(li);
          }
        }
        pump();
      });
    }

    function answered(item, data) {
      if (Array.isArray(data.entries) && data.entries.some(function (e) {
        return e && e.role === 'user' && e.client_id === item.id;
      })) {
        showEntries(data.entries, false);
        return;
      }
      // An answer without our entries (not a store that keeps them): show
      // the reply; a poll that brings the entries later takes both over.
      var seen = byClient.get(item.id) || {};
      if (!seen.bot && typeof data.message === 'string') {
        seen.bot = addMessage('bot', data.message);
        byClient.set(item.id, seen);
        if (seen.user) seen.user.after(seen.bot);
        reveal(seen.bot);
      }
      stored(item.id, seen.user);
    }

    // Our message is in the store: out of the outbox, and shown as sent.
    function stored(id, li) {
      var i = outbox.findIndex(function (item) { return item.id === id; });
      if (i < 0) return;
      outbox.splice(i, 1);
      done.add(id);
      saveOutbox();
      if (li) setState(li, 'done');
    }

    // Other tabs of this room share the saved outbox: keep their items too.
    function saveOutbox() {
      var mine = new Set(outbox.map(function (i) { return i.id; }));
      var saved = load(outboxKey);
      var others = (Array.isArray(saved) ? saved : []).filter(function (i) {
        return i && typeof i.id === 'string' && !mine.has(i.id) && !done.has(i.id);
      });
      var all = outbox.concat(others);
      store(outboxKey, all.length ? all : null);
    }

    function restoreOutbox() {
      var saved = load(outboxKey);
      if (!Array.isArray(saved)) return;
      saved.forEach(function (i) {
        if (!i || typeof i.id !== 'string' || typeof i.text !== 'string') return;
        var item = { id: i.id, text: i.text };
        if (typeof i.error === 'string') item.error = i.error;
        outbox.push(item);
        showOutgoing(item);
      });
      log.scrollTop = log.scrollHeight;
    }

    // --- Without history (--store none): the stateless chat ------------------

    function goStateless() {
      setMode('stateless');
      setConnection();
      if (pollAbort) pollAbort.abort();
      clearTimeout(pollTimer);
      clearTimeout(sendTimer);
      pollTimer = sendTimer = null;
      log.removeAttribute('aria-busy');
      forgetUnconfirmed([]); // a saved room history; this server keeps none
      // What waited in the outbox is sent the stateless way, once each.
      var waiting = outbox;
      outbox = [];
      store(outboxKey, null);
      waiting.forEach(function (item) {
        var li = byClient.get(item.id) && byClient.get(item.id).user;
        if (!li) return;
        delete li.dataset.clientId;
        if (item.error) return; // refused already; Retry sends it again
        sendStateless(li, item.text);
      });
    }

    function sendStateless(msg, text) {
      setState(msg, 'pending');
      call('POST', endpoint, { message: text }, SEND_TIMEOUT_MS, null).then(function (r) {
        if (r.ok && typeof r.data.message === 'string') {
          setState(msg, 'done');
          reveal(addMessage('bot', r.data.message, lastReplyOf(msg)));
        } else {
          if (r.ok) r = failure(0, BAD_ANSWER);
          setState(msg, 'failed', r.error);
          reveal(msg);
        }
      });
    }

    // The element a new reply to msg goes after: msg itself, or the replies
    // already following it (a retried message may have got one before).
    function lastReplyOf(msg) {
      var last = msg;
      while (last.nextElementSibling && last.nextElementSibling.classList.contains('bot')) {
        last = last.nextElementSibling;
      }
      return last;
    }

    // --- HTTP ------------------------------------------------------------------

    // Resolves to {ok, status, data, error, retry}; never rejects. retry: a
    // failure that may pass (no answer, 5xx, 429), as opposed to a refusal.
    function call(method, url, body, timeoutMs, abort) {
      abort = abort || new AbortController();
      var timedOut = false;
      var timer = setTimeout(function () { timedOut = true; abort.abort(); }, timeoutMs);
      var init = { method: method, headers: { 'Accept': 'application/json' },
                   cache: 'no-store', signal: abort.signal };
      if (body !== null) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      return fetch(url, init).then(function (res) {
        // The timer still runs while the body is read: a stalled body aborts too.
        return res.json().then(function (data) {
          return answerOf(res, data);
        }, function () {
          return timedOut ? failure(0, TOO_SLOW) : answerOf(res, null);
        });
      }, function () {
        return failure(0, timedOut ? TOO_SLOW : NO_SERVER);
      }).finally(function () {
        clearTimeout(timer);
      });
    }

    function failure(status, error) {
      return { ok: false, status: status, data: null, error: error,
               retry: status === 0 || status === 429 || status >= 500 };
    }

    function answerOf(res, data) {
      var isObject = data !== null && typeof data === 'object';
      if (res.ok && isObject && (typeof data.message === 'string' || Array.isArray(data.entries))) {
        return { ok: true, status: res.status, data: data };
      }
      if (res.ok) return failure(0, BAD_ANSWER); // may be a proxy's page: try again
      if (isObject && typeof data.error === 'string' && data.error.trim() !== '') {
        return failure(res.status, data.error);
      }
      if (res.status >= 502 && res.status <= 504) return failure(res.status, NO_SERVER);
      return failure(res.status, 'The server answered with an error (HTTP ' + res.status + ').');
    }

    // --- The log ---------------------------------------------------------------

    // Builds one message bubble. after: insert right after this element
    // (a reply follows its own message), else append at the end.
    function addMessage(who, text, after) {
      var li = document.createElement('li');
      li.className = 'msg ' + who;
      var speaker = document.createElement('span');
      speaker.className = 'speaker';
      speaker.textContent = who === 'user' ? 'You: ' : who === 'bot' ? 'Server: ' : 'Someone: ';
      var body = document.createElement('p');
      body.className = 'text';
      body.textContent = text;
      li.append(speaker, body);
      if (after) after.after(li); else log.append(li);
      return li;
    }

    // Shows msg as waiting, failed (with why and a Retry button) or done.
    function setState(msg, state, why) {
      var old = msg.querySelector('.status');
      if (old) old.remove();
      msg.classList.toggle('pending', state === 'pending');
      msg.classList.toggle('failed', state === 'failed');
      if (state === 'pending') {
        var note = document.createElement('p');
        note.className = 'status note';
        note.textContent = root.dataset.chatConnection === 'reconnecting' ? 'queued' : 'sending…';
        msg.append(note);
      } else if (state === 'failed') {
        var box = document.createElement('div');
        box.className = 'status problem';
        var error = document.createElement('p');
        error.className = 'error';
        error.textContent = why;
        var retry = document.createElement('button');
        retry.type = 'button';
        retry.className = 'retry';
        retry.textContent = 'Retry';
        box.append(error, retry);
        // A refused message waits at the end of the log until retried or
        // discarded (a message too large will never pass).
        if (mode !== 'stateless' && msg.dataset.clientId) {
          var discard = document.createElement('button');
          discard.type = 'button';
          discard.className = 'discard';
          discard.textContent = 'Discard';
          box.append(discard);
        }
        msg.append(box);
      }
    }

    // When the log shrinks (a phone's keyboard opens, the window is resized)
    // and the reader was at the newest message, stay there. Only scrolling
    // up leaves the end: a smooth scroll on its way down still counts as there.
    function keepNewestInView() {
      var lastTop = log.scrollTop;
      log.addEventListener('scroll', function () {
        if (log.scrollHeight - log.scrollTop - log.clientHeight < 32) atEnd = true;
        else if (log.scrollTop < lastTop) atEnd = false;
        lastTop = log.scrollTop;
      });
      if (!window.ResizeObserver) return;
      new ResizeObserver(function () {
        if (atEnd) log.scrollTop = log.scrollHeight;
      }).observe(log);
    }

    function reveal(el) {
      el.scrollIntoView({ block: 'nearest', behavior: smooth ? 'smooth' : 'auto' });
    }
  }
})();
