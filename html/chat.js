/*
 * chat.js: the chat page. Sends each message as JSON to the page's own
 * directory URL and shows the message and its reply as chat bubbles.
 *
 * Protocol: POST {"message": text} -> 200 {"message": "received <text>"};
 * any failure is a non-2xx status with {"error": "<sentence>"} (from the
 * backend or nginx), or no answer at all.
 *
 * Stable hooks for tests (keep them when restyling):
 *   #chat             the form; #message its text input
 *   #log              the message list (role="log", aria-live="polite")
 *   .msg.user         a message the user sent; .msg.bot a reply
 *   .msg.pending      a user message waiting for its reply
 *   .msg.failed       a user message whose request failed
 *   .msg .text        the message text (always set with textContent)
 *   .msg .error       the error sentence of a failed message
 *   .msg button.retry re-sends a failed message
 *   <html data-chat-errors="[...]">  JSON list of CSP violations and script
 *                     errors seen by the page; "[]" once chat.js has run.
 *
 * The log is kept in sessionStorage, so a reload shows the history again
 * and a message that failed (or was still pending) can still be retried.
 *
 * CSP: no inline script or style, no eval, no element.style: only classes.
 */
(function () {
  'use strict';

  var TIMEOUT_MS = 15000;          // give up waiting for a reply after this
  var STORE_KEY = 'chat-fcgi.log'; // sessionStorage key of the saved log
  var STORE_MAX = 200;             // messages kept across reloads

  var NO_SERVER = 'The server could not be reached.';
  var TOO_SLOW = 'The server did not answer in time.';
  var BAD_ANSWER = 'The server sent an answer this page does not understand.';
  var INTERRUPTED = 'The page was reloaded before the reply arrived.';

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

  function start() {
    var form = document.getElementById('chat');
    var input = document.getElementById('message');
    var log = document.getElementById('log');
    // The page's own directory (/chat/ for /chat/ or /chat/index.html),
    // without any query string.
    var endpoint = new URL('./', location.href).href;
    var smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;

    restore();
    keepNewestInView();

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
      var msg = addMessage('user', text, null);
      send(msg, text);
      reveal(msg);
    });

    log.addEventListener('click', function (e) {
      var button = e.target.closest('button.retry');
      if (!button) return;
      var msg = button.closest('.msg');
      input.focus(); // the button is about to go away; keep focus useful
      send(msg, msg.querySelector('.text').textContent);
    });

    // Builds one message bubble. after: insert right after this element
    // (a reply follows its own message), else append at the end.
    function addMessage(who, text, after) {
      var li = document.createElement('li');
      li.className = 'msg ' + who;
      var speaker = document.createElement('span');
      speaker.className = 'speaker';
      speaker.textContent = who === 'user' ? 'You: ' : 'Server: ';
      var body = document.createElement('p');
      body.className = 'text';
      body.textContent = text;
      li.append(speaker, body);
      if (after) after.after(li); else log.append(li);
      return li;
    }

    // When the log shrinks (a phone's keyboard opens, the window is resized)
    // and the reader was at the newest message, stay there. Only scrolling
    // up leaves the end: a smooth scroll on its way down still counts as there.
    function keepNewestInView() {
      var atEnd = true;
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

    // Shows msg as waiting, failed (with why and a Retry button) or done.
    function setState(msg, state, why) {
      var old = msg.querySelector('.status');
      if (old) old.remove();
      msg.classList.toggle('pending', state === 'pending');
      msg.classList.toggle('failed', state === 'failed');
      if (state === 'pending') {
        var note = document.createElement('p');
        note.className = 'status note';
        note.textContent = 'sending…';
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
        msg.append(box);
      }
    }

    function send(msg, text) {
      setState(msg, 'pending');
      save();
      request(text).then(function (result) {
        if (result.error !== undefined) {
          setState(msg, 'failed', result.error);
          reveal(msg);
        } else {
          setState(msg, 'done');
          reveal(addMessage('bot', result.reply, lastReplyOf(msg)));
        }
        save();
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

    // Resolves to {reply: text} or {error: sentence}; never rejects.
    function request(text) {
      var abort = new AbortController();
      var timer = setTimeout(function () { abort.abort(); }, TIMEOUT_MS);
      return fetch(endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
        body: JSON.stringify({ message: text }),
        cache: 'no-store',
        signal: abort.signal
      }).then(function (res) {
        // The timer still runs while the body is read: a stalled body aborts too.
        return res.json().then(function (data) {
          return answerOf(res, data);
        }, function () {
          return abort.signal.aborted ? { error: TOO_SLOW } : answerOf(res, null);
        });
      }, function () {
        return { error: abort.signal.aborted ? TOO_SLOW : NO_SERVER };
      }).finally(function () {
        clearTimeout(timer);
      });
    }

    function answerOf(res, data) {
      var isObject = data !== null && typeof data === 'object';
      if (res.ok && isObject && typeof data.message === 'string') {
        return { reply: data.message };
      }
      if (isObject && typeof data.error === 'string' && data.error.trim() !== '') {
        return { error: data.error };
      }
      if (res.ok) return { error: BAD_ANSWER };
      if (res.status >= 502 && res.status <= 504) return { error: NO_SERVER };
      return { error: 'The server answered with an error (HTTP ' + res.status + ').' };
    }

    // sessionStorage may be missing or full (private modes, quotas): the
    // chat still works, it just forgets on reload.
    function save() {
      var items = Array.prototype.map.call(log.children, function (li) {
        var item = { who: li.classList.contains('user') ? 'user' : 'bot',
                     text: li.querySelector('.text').textContent };
        if (li.classList.contains('pending')) item.error = INTERRUPTED;
        if (li.classList.contains('failed')) item.error = li.querySelector('.error').textContent;
        return item;
      }).slice(-STORE_MAX);
      try {
        sessionStorage.setItem(STORE_KEY, JSON.stringify(items));
      } catch (e) { /* not saved; nothing else to do */ }
    }

    function restore() {
      var items;
      try {
        items = JSON.parse(sessionStorage.getItem(STORE_KEY) || '[]');
      } catch (e) {
        return;
      }
      if (!Array.isArray(items)) return;
      items.forEach(function (item) {
        if (!item || typeof item.text !== 'string') return;
        var msg = addMessage(item.who === 'user' ? 'user' : 'bot', item.text, null);
        // A message left pending was maybe never answered: offer a retry
        // rather than resending on its own (that could send it twice).
        if (typeof item.error === 'string') setState(msg, 'failed', item.error);
      });
      log.scrollTop = log.scrollHeight; // the newest at once, no animation
    }
  }
})();
