/* Review console: small progressive enhancements, no framework, no build step.
 * Without this file every page still works with plain forms and links. */
(function () {
  "use strict";

  function fold(text) {
    return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }

  function typing(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
  }

  function focusFirst(container, selectors) {
    for (var i = 0; i < selectors.length; i++) {
      var el = container.querySelector(selectors[i]);
      if (el) {
        if (!el.hasAttribute("tabindex") && !/^(A|BUTTON|INPUT|SELECT|TEXTAREA)$/.test(el.tagName)) {
          el.setAttribute("tabindex", "-1");
        }
        el.focus();
        return;
      }
    }
  }

  /* Forms with data-fragment-target are sent with fetch; the answer replaces the target. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.fragmentTarget) return;
    var target = document.querySelector(form.dataset.fragmentTarget);
    if (!target) return;
    event.preventDefault();
    if (form.dataset.busy === "1") return;
    form.dataset.busy = "1";
    target.setAttribute("aria-busy", "true");
    var data = new FormData(form, event.submitter || undefined);
    fetch(form.action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Console-Fragment": "1" }
    }).then(function (response) {
      if (response.redirected && response.url.indexOf("/console/login") !== -1) {
        window.location.assign(response.url);
        return null;
      }
      return response.text();
    }).then(function (html) {
      if (html === null) return;
      target.innerHTML = html;
      focusFirst(target, ["#item-title", "#empty-title", "#error-title", "#result-title"]);
    }).catch(function () {
      target.innerHTML = '<p class="error-text" role="alert">The service did not answer; try again.</p>';
    }).finally(function () {
      delete form.dataset.busy;
      target.removeAttribute("aria-busy");
    });
  });

  /* Ctrl+Enter in a text area submits its form. */
  document.addEventListener("keydown", function (event) {
    var el = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && el instanceof HTMLTextAreaElement && el.form) {
      event.preventDefault();
      el.form.requestSubmit();
    }
  });

  /* Review queue keys: A accept, 1-3 top-3, / search, S skip (not while typing). */
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var review = document.getElementById("review");
    if (!review) return;
    if (event.key === "/") {
      var search = document.getElementById("category-search");
      if (search) { event.preventDefault(); search.focus(); }
      return;
    }
    var control = review.querySelector('[data-key="' + event.key.toLowerCase() + '"]');
    if (control) {
      event.preventDefault();
      control.click();
    }
  });

  /* Category search: filters the list by name or code (accents ignored); Enter saves. */
  function filterOptions(input) {
    var select = document.querySelector(input.dataset.filters);
    if (!select) return null;
    var query = fold(input.value.trim());
    var first = null;
    Array.prototype.forEach.call(select.options, function (option) {
      var match = !query || fold(option.textContent).indexOf(query) !== -1;
      option.hidden = !match;
      if (match && !first) first = option;
    });
    if (first) { select.value = first.value; } else { select.selectedIndex = -1; }
    return select;
  }

  document.addEventListener("input", function (event) {
    var input = event.target;
    if (input instanceof HTMLInputElement && input.dataset.filters) filterOptions(input);
  });

  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (!(input instanceof HTMLInputElement) || !input.dataset.filters) return;
    var select = document.querySelector(input.dataset.filters);
    if (!select) return;
    if (event.key === "Enter") {
      event.preventDefault();
      filterOptions(input);
      if (select.value && input.form) input.form.requestSubmit();
    } else if (event.key === "ArrowDown") {
      event.preventDefault();
      select.focus();
    } else if (event.key === "Escape") {
      input.value = "";
      filterOptions(input);
      input.blur();
    }
  });

  /* Image: file picker or drag-and-drop, with a preview. */
  function showPreview(input) {
    var preview = document.getElementById("preview");
    if (!preview) return;
    var file = input.files && input.files[0];
    if (preview.dataset.url) { URL.revokeObjectURL(preview.dataset.url); delete preview.dataset.url; }
    if (!file) { preview.hidden = true; preview.removeAttribute("src"); return; }
    var url = URL.createObjectURL(file);
    preview.dataset.url = url;
    preview.src = url;
    preview.alt = "Preview of " + file.name;
    preview.hidden = false;
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input instanceof HTMLInputElement && input.type === "file") showPreview(input);
  });

  document.addEventListener("reset", function (event) {
    var form = event.target;
    window.setTimeout(function () {
      var input = form.querySelector('input[type="file"]');
      if (input) showPreview(input);
    }, 0);
  });

  document.addEventListener("DOMContentLoaded", function () {
    var zone = document.getElementById("dropzone");
    if (!zone) return;
    var input = document.querySelector(zone.dataset.fileInput);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!input || !event.dataTransfer || !event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
  });
})();
