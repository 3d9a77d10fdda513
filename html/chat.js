/*
 * chat.js: the chat page. It joins a room, shows the room's stored history,
 * listens for what others say (an event stream, or long-polls), shows the
 * server's replies growing as they are streamed, and sends each message
 * exactly once, even across network failures and reloads.
 *
 * Protocol (JSON unless said; any failure is a non-2xx status with
 * {"error": "<sentence>"}, from the backend or nginx, or no answer at all):
 *   POST ./ {"message", "room", "client_id"}
 *        -> {"message": reply, "room", "entries": [entry...], "next": seq}
 *        The same client_id in the same room is stored once: a retry gets
 *        the first answer back, so a message can be re-sent until answered.
 *        With "Accept: text/event-stream" a server that streams answers
 *        200 text/event-stream instead: "delta" events {"text": piece}
 *        (together, the reply), then one "done" event whose data is the
 *        JSON above, then the end. Errors stay JSON. A stream that ends
 *        before "done" was cut: the post is sent again, same client_id.
 *   GET ./messages?room=R&limit=N             the newest N entries
 *   GET ./messages?room=R&after=SEQ&wait=S    entries after SEQ, held up to
 *        S seconds until there is one -> {"entries": [...], "next": seq};
 *        {"busy": true, "retry_after": s} when the server holds too many.
 *   GET ./events?room=R&after=SEQ             text/event-stream: each entry
 *        after SEQ as "id: seq", "event: message", "data: entry"; resumed
 *        by EventSource with Last-Event-ID. Non-200 (503 when the server
 *        holds too many streams, 404 without history) means long-polls.
 *   entry: {"seq", "role": "user"|"bot", "text", "time", "client_id"}
 *   A server without history (--store none) answers 404 there; the page
 *   then posts {"message"} alone, as the stateless chat does.
 *
 * Receiving: the history first (GET ./messages), then the event stream
 * where the browser has EventSource, else long-polls. The stream falls back
 * to long-polls, resuming from the same seq, when it is refused (the browser
 * then closes it), fails twice without opening in between (the browser's
 * own reconnects, every 2 s, do not back off; the long-polls do), or does
 * not open within 10 s (a proxy that buffers it). Events are
 * tried again once the long-polls come back from a failure (the server was
 * away: its streams are likely back too), else 30 s after the fallback,
 * doubling up to 10 min while they keep failing (a server at its limit, or
 * one without events, is asked rarely). Either way entries are shown once
 * each, by seq, and the cursor only moves forward: no gap, no duplicate.
 *
 * Rooms: ?room=NAME joins NAME; a plain /chat/ joins a private room whose
 * random name is kept in localStorage, so a reload finds it again.
 * localStorage also keeps, per room, the messages not yet stored (the
 * outbox), the newest entries seen (shown at once on a reload, then
 * replaced by the server's) and the random prefix of our client ids there
 * (one per room, so that nothing links a person's rooms).
 *
 * Stable hooks for tests (keep them when restyling):
 *   #chat             the form; #message its text input
 *   #log              the message list (role="log", aria-live="polite")
 *   .msg.user         a message sent from this browser; .msg.bot a reply;
 *   .msg.other        a message someone else sent to the room
 *   .msg[data-seq]    a message the server stored, with its number
 *   .msg.pending      a message of ours not yet confirmed by the server
 *   .msg.streaming    a reply still arriving in parts (its text grows)
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
 *   <html data-chat-receiving="history|events|long-poll|resting">  how entries
 *                     come (resting: a hidden tab, see below)
 *   <html data-chat-rest-after="S">  seconds a hidden tab keeps receiving
 *                     (default 60); then it closes its stream or long-poll
 *                     and resumes from its cursor once shown again
 *   <html data-chat-errors="[...]">  JSON list of CSP violations and script
 *                     errors seen by the page; "[]" once chat.js has run.
 *   window.chatFcgi.SSEParser  the page's event-stream parser (see below)
 *
 * CSP: no inline script or style, no eval, no element.style: only classes.
 */
(function () {
  'use strict';

  var SEND_TIMEOUT_MS = 15000;     // a post unanswered (or its reply stalled) this long is retried
  var POLL_WAIT_S = 25;            // the server holds a poll up to this long
  // Past the hold, nginx and the network get 10 s before the poll counts as lost.
  var POLL_TIMEOUT_MS = (POLL_WAIT_S + 10) * 1000;
  var HISTORY_LIMIT = 100;         // entries shown on load
  var BACKOFF_FIRST_MS = 500;      // after a failure, wait this long, doubling...
  var BACKOFF_MAX_MS = 10000;      // ...up to this
  var QUICK_EMPTY_MS = 500;        // an empty poll answered faster than this...
  var QUICK_EMPTY_PAUSE_MS = 1000; // ...is not repeated sooner than this
  var LOG_MAX = 1000;              // messages kept on the page
  var EVENTS_MAX_ERRORS = 2;       // stream errors without an open in between
  var EVENTS_OPEN_MS = 10000;      // a stream not open by then is given up
  var EVENTS_AGAIN_MS = 30000;     // after a fallback, try events again after this,
  var EVENTS_AGAIN_MAX_MS = 600000; // doubling up to this while they keep failing
  var REST_AFTER_S = 60;           // a tab hidden this long stops receiving (<html data-chat-rest-after>)
  var ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

  var KEY_PRIVATE_ROOM = 'chat-fcgi.private-room';
  var KEY_AUTHOR = 'chat-fcgi.author.'; // + room: who we are there
  var KEY_OUTBOX = 'chat-fcgi.outbox.'; // + room: messages not yet stored
  var KEY_HISTORY = 'chat-fcgi.history.'; // + room: the newest entries seen

  var NO_SERVER = 'The server could not be reached.';
  var TOO_SLOW = 'The server did not answer in time.';
  var BAD_ANSWER = 'The server sent an answer this page does not understand.';
  var CUT_OFF = 'The answer was cut off.';

  // What the browser offers: EventSource to listen, a readable response
  // body to watch a reply arrive. Without them, long-polls and whole answers.
  var HAS_EVENTSOURCE = typeof EventSource === 'function';
  var HAS_STREAMS = typeof ReadableStream === 'function' && typeof TextDecoder === 'function' &&
    typeof Response === 'function' && 'body' in Response.prototype;

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

  // A parser of text/event-stream (the HTML standard's rules): push(text,
  // end) takes the next decoded piece of the stream, cut anywhere, and
  // returns the events it completed as {type, data, id}. Lines end with
  // CRLF, LF or CR (a CR at the end of a piece waits for a possible LF);
  // "field: value" with one optional space; ":" starts a comment; data lines
  // join with LF; a blank line ends an event, which has a type ("message"
  // when not given) and is dispatched only with data. At the end, an event
  // without its blank line is dropped, as a browser drops it.
  function SSEParser() {
    this.buf = '';
    this.type = '';
    this.data = null;
    this.id = '';
  }
  SSEParser.prototype.push = function (text, end) {
    var out = [];
    var buf = this.buf + text;
    var start = 0;
    for (;;) {
      var cr = buf.indexOf('\r', start);
      var lf = buf.indexOf('\n', start);
      var eol = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      if (eol < 0) break;
      var next = eol + 1;
      if (eol === cr) {
        if (next === buf.length && !end) break; // its LF may be in the next piece
        if (buf.charAt(next) === '\n') next++;
      }
      this.line(buf.slice(start, eol), out);
      start = next;
    }
    this.buf = end ? '' : buf.slice(start);
    if (end) {
      this.type = '';
      this.data = null;
    }
    return out;
  };
  SSEParser.prototype.line = function (line, out) {
    if (line === '') {
      if (this.data !== null) out.push({ type: this.type || 'message', data: this.data, id: this.id });
      this.type = '';
      this.data = null;
      return;
    }
    if (line.charAt(0) === ':') return; // a comment: a keep-alive
    var colon = line.indexOf(':');
    var field = colon < 0 ? line : line.slice(0, colon);
    var value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charAt(0) === ' ') value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data = this.data === null ? value : this.data + '\n' + value;
    else if (field === 'id' && value.indexOf('\0') < 0) this.id = value;
    // "retry" and unknown fields: nothing to do for a single response.
  };
  window.chatFcgi = Object.freeze({ SSEParser: SSEParser });

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
    var eventsURL = new URL('events', endpoint).href;
    var smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;

    var room = chooseRoom();

    // Who "we" are in this room: our messages carry client ids that start
    // with this, so they show as ours in every tab of this browser, and
    // others' do not. One per room, drawn at random: every reader of a room
    // sees these ids, and one id in every room would tie a person's rooms
    // together.
    var author = load(KEY_AUTHOR + room);
    if (typeof author !== 'string' || !/^[0-9a-f]{12}$/.test(author)) {
      author = randomHex(6);
      store(KEY_AUTHOR + room, author);
    }
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
    var events = null;       // the EventSource while the page listens to one
    var eventsErrors = 0;    // its errors since it last opened
    var eventsFallbacks = 0; // fallbacks to long-polls since a stream last opened
    var eventsAgainAt = 0;   // not before this time (ms) are events tried again
    var eventsOpenTimer = null;
    var streaming = new Set(); // client ids whose reply this tab is reading as a stream
    var deferred = new Map();  // client_id -> the stored reply, held until its stream ends
    var atEnd = true;
    var resting = false;     // hidden long enough: neither stream nor long-poll open
    var restTimer = null;

    setMode('connecting');
    setReceiving('history');
    setConnection();
    showRoom();
    keepNewestInView();
    restoreHistory();
    restoreOutbox();
    poll();
    pump();
    document.addEventListener('visibilitychange', restOrWake);
    if (document.visibilityState === 'hidden') restOrWake(); // opened in the background

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
      if (mode === 'stateless' || resting) return;
      var first = cursor === null;
      var url = messagesURL + '?room=' + encodeURIComponent(room) + (first
        ? '&limit=' + HISTORY_LIMIT
        : '&after=' + cursor + '&wait=' + POLL_WAIT_S);
      var began = Date.now();
      if (first) log.setAttribute('aria-busy', 'true');
      var abort = pollAbort = new AbortController();
      call('GET', url, null, POLL_TIMEOUT_MS, abort).then(function (r) {
        if (pollAbort !== abort) return; // given up on purpose (rest, stateless)
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
        // Back to (or first to) the event stream: at once after an outage,
        // else once the wait after the last fallback is over.
        if (HAS_EVENTSOURCE && (wasDown || Date.now() >= eventsAgainAt)) {
          listen();
          return;
        }
        setReceiving('long-poll');
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

    // The event stream: entries after the cursor as they are stored. The
    // browser reconnects it by itself (with Last-Event-ID) when it ends, as
    // it does when the server shuts down.
    function listen() {
      if (resting) return;
      var es = new EventSource(eventsURL + '?room=' + encodeURIComponent(room) + '&after=' + cursor);
      events = es;
      eventsErrors = 0;
      // A proxy that holds the stream back (buffering it) gives neither an
      // open nor an error: without an open, long-polls take over.
      function watch() {
        clearTimeout(eventsOpenTimer);
        eventsOpenTimer = setTimeout(function () {
          if (events === es && es.readyState !== EventSource.OPEN) fallBack();
        }, EVENTS_OPEN_MS);
      }
      watch();
      es.addEventListener('open', function () {
        if (events !== es) return;
        clearTimeout(eventsOpenTimer);
        eventsErrors = 0;
        eventsFallbacks = 0;
        setReceiving('events');
        pollBackoff.reset();
        var wasDown = trouble.poll;
        setTrouble('poll', false);
        if (wasDown) retryNow();
      });
      es.addEventListener('message', function (m) {
        if (events !== es) return;
        var e = parse(m.data);
        if (!e || typeof e !== 'object' || !Number.isSafeInteger(e.seq)) {
          fallBack(); // not what this page understands; long-polls resume from the cursor
          return;
        }
        if (e.seq <= cursor) return; // already shown
        showEntries([e], false);
        cursor = e.seq;
      });
      es.addEventListener('error', function () {
        if (events !== es) return;
        // CLOSED: refused (not 200, not an event stream); the browser gives up.
        // Else it reconnects by itself: once is an ended stream, twice is trouble.
        if (es.readyState === EventSource.CLOSED || ++eventsErrors >= EVENTS_MAX_ERRORS) fallBack();
        else watch();
      });
    }

    // Long-polls take over from the cursor, at once; a server that is away
    // shows as such there, with the backoff.
    function fallBack() {
      stopListening();
      eventsFallbacks = Math.min(eventsFallbacks + 1, 16);
      eventsAgainAt = Date.now() +
        Math.min(EVENTS_AGAIN_MAX_MS, EVENTS_AGAIN_MS * Math.pow(2, eventsFallbacks - 1));
      setReceiving('long-poll');
      poll();
    }

    function stopListening() {
      clearTimeout(eventsOpenTimer);
      if (!events) return;
      events.close();
      events = null;
    }

    // Browsers give a site six connections over HTTP/1.1, and each tab's
    // stream or long-poll holds one: a seventh tab could not even post. A
    // tab hidden for a while lets its one go, and resumes from the cursor
    // when shown again (no gap, no duplicate).
    function restOrWake() {
      clearTimeout(restTimer);
      restTimer = null;
      if (document.visibilityState === 'hidden') {
        var s = Number(root.dataset.chatRestAfter);
        restTimer = setTimeout(rest, 1000 * (s > 0 ? s : REST_AFTER_S));
      } else if (resting) {
        resting = false;
        if (cursor !== null && HAS_EVENTSOURCE && Date.now() >= eventsAgainAt) listen();
        else poll();
      }
    }

    function rest() {
      restTimer = null;
      if (mode === 'stateless' || document.visibilityState !== 'hidden') return;
      resting = true;
      stopListening();
      clearTimeout(pollTimer);
      pollTimer = null;
      var abort = pollAbort;
      pollAbort = null;
      if (abort) abort.abort();
      setTrouble('poll', false); // nobody is trying: nothing to show as down
      setReceiving('resting');
    }

    function setReceiving(how) {
      root.dataset.chatReceiving = how;
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
      if (id && e.role === 'bot' && streaming.has(id)) {
        // Our reply, stored before its first part was sent, arrives whole
        // (through events) while this tab watches it grow: it waits for the
        // stream's end, which shows it (or lets it be shown, if cut).
        deferred.set(id, e);
        return null;
      }
      var seen = id && byClient.get(id);
      var li = seen && seen[e.role];
      if (li && li.dataset.seq !== undefined) return null; // the same message again
      if (li) {
        setText(li, e.text); // a streamed reply's parts give way to the stored text
      } else {
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
      streaming.add(item.id);
      var body = { message: item.text, room: room, client_id: item.id };
      call('POST', endpoint, body, SEND_TIMEOUT_MS, null, function (piece) {
        grow(item.id, piece);
      }).then(function (r) {
        sending = false;
        streaming.delete(item.id);
        if (mode === 'stateless') {
          dropPartial(item.id);
          return;
        }
        if (r.status === 404) {
          dropPartial(item.id);
          goStateless();
          return;
        }
        if (r.retry) {
          // Not stored, or not known to be: the same client id again later
          // is stored at most once (and its reply streamed again). A reply
          // that came whole meanwhile (events) is shown now.
          dropPartial(item.id);
          showDeferred(item.id);
          setTrouble('send', true);
          sendTimer = setTimeout(pump, sendBackoff.next());
          return;
        }
        sendBackoff.reset();
        setTrouble('send', false);
        if (r.ok) {
          if (mode === 'connecting') setMode('room');
          answered(item, r.data);
          showDeferred(item.id);
        } else {
          dropPartial(item.id);
          showDeferred(item.id);
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
      if (seen.bot && seen.bot.dataset.seq === undefined && typeof data.message === 'string') {
        setText(seen.bot, data.message); // the streamed parts, finished
      } else if (!seen.bot && typeof data.message === 'string') {
        seen.bot = addMessage('bot', data.message);
        byClient.set(item.id, seen);
        if (seen.user) seen.user.after(seen.bot);
        reveal(seen.bot);
      }
      stored(item.id, seen.user);
    }

    // One more part of the reply to our message id: the reply's bubble,
    // right after the message, grows (unless the stored reply is there).
    function grow(id, piece) {
      var seen = byClient.get(id);
      if (!seen || !seen.user || mode === 'stateless') return;
      if (seen.bot && seen.bot.dataset.seq !== undefined) return;
      if (!seen.bot) {
        seen.bot = addMessage('bot', '', seen.user);
        seen.bot.dataset.clientId = id;
        startStreaming(seen.bot);
      }
      if (seen.user.nextElementSibling !== seen.bot) seen.user.after(seen.bot);
      seen.bot.querySelector('.text').append(piece);
      if (atEnd) reveal(seen.bot);
    }

    // A reply that was growing and will not be finished by this answer.
    function dropPartial(id) {
      var seen = byClient.get(id);
      if (!seen || !seen.bot || seen.bot.dataset.seq !== undefined) return;
      seen.bot.remove();
      delete seen.bot;
      if (!seen.user) byClient.delete(id);
    }

    function showDeferred(id) {
      var e = deferred.get(id);
      if (!e) return;
      deferred.delete(id);
      showEntries([e], false);
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
      var abort = pollAbort;
      pollAbort = null;
      if (abort) abort.abort();
      stopListening();
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
      var partial = null; // the reply, growing as its parts arrive
      call('POST', endpoint, { message: text }, SEND_TIMEOUT_MS, null, function (piece) {
        if (!partial) {
          partial = addMessage('bot', '', lastReplyOf(msg));
          startStreaming(partial);
        }
        partial.querySelector('.text').append(piece);
        if (atEnd) reveal(partial);
      }).then(function (r) {
        if (r.ok && typeof r.data.message === 'string') {
          setState(msg, 'done');
          if (partial) setText(partial, r.data.message);
          else reveal(addMessage('bot', r.data.message, lastReplyOf(msg)));
        } else {
          if (partial) partial.remove();
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
    // failure that may pass (no answer, 5xx, 429, a stream cut short), as
    // opposed to a refusal. With onDelta (a post whose reply may come in
    // parts), the server is asked for a stream, and onDelta(text) gets each
    // part as it arrives; the answer is then the stream's "done" event. A
    // JSON answer (an error, or a server that does not stream) is read as
    // without onDelta. timeoutMs: the longest wait for the answer, or, in a
    // stream, between two of its pieces.
    function call(method, url, body, timeoutMs, abort, onDelta) {
      abort = abort || new AbortController();
      var timedOut = false;
      var timer = null;
      function arm() {
        clearTimeout(timer);
        timer = setTimeout(function () { timedOut = true; abort.abort(); }, timeoutMs);
      }
      arm();
      var stream = Boolean(onDelta) && HAS_STREAMS;
      var init = { method: method,
                   headers: { 'Accept': stream ? 'text/event-stream' : 'application/json' },
                   cache: 'no-store', signal: abort.signal };
      if (body !== null) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      return fetch(url, init).then(function (res) {
        var type = res.headers.get('Content-Type') || '';
        if (stream && res.ok && res.body && /^text\/event-stream\s*(;|$)/i.test(type)) {
          return readStream(res, onDelta, arm).then(function (done) {
            if (!done) return failure(0, CUT_OFF);
            return answerOf(res, done.data);
          }, function () {
            return failure(0, timedOut ? TOO_SLOW : CUT_OFF);
          });
        }
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

    // Reads a streamed reply: "delta" parts go to onDelta as they come.
    // Resolves to {data} (the "done" event's JSON, null if it is not JSON)
    // or to null when the stream ended without "done"; rejects when reading
    // fails (the connection broke, or the timer aborted it).
    function readStream(res, onDelta, progress) {
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var parser = new SSEParser();
      function next() {
        return reader.read().then(function (chunk) {
          progress();
          var text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
          var got = parser.push(text, chunk.done);
          for (var i = 0; i < got.length; i++) {
            var ev = got[i];
            if (ev.type === 'delta') {
              var part = parse(ev.data);
              if (part && typeof part.text === 'string' && part.text !== '') onDelta(part.text);
            } else if (ev.type === 'done') {
              // The rest is the end of the response: read it, so the
              // connection can be kept, but give up on it rather than wait.
              if (!chunk.done) {
                var giveUp = setTimeout(function () { reader.cancel().catch(ignore); }, 2000);
                reader.read().then(function (c) {
                  clearTimeout(giveUp);
                  if (!c.done) reader.cancel().catch(ignore);
                }, function () { clearTimeout(giveUp); });
              }
              return { data: parse(ev.data) };
            }
          }
          return chunk.done ? null : next();
        });
      }
      return next();
    }

    function ignore() { /* nothing to do: the answer is in already */ }

    function parse(json) {
      try {
        return JSON.parse(json);
      } catch (e) {
        return null;
      }
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

    // A reply whose text arrives in parts: marked, and kept from being read
    // out piece by piece (aria-busy) until its text is whole.
    function startStreaming(li) {
      li.classList.add('streaming');
      li.setAttribute('aria-busy', 'true');
    }

    // The whole text of a message, in place of what it showed.
    function setText(li, text) {
      li.querySelector('.text').textContent = text;
      li.classList.remove('streaming');
      li.removeAttribute('aria-busy');
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
