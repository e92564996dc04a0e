// Login page: POST /api/auth/login, then go to the dashboard.
const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  error.hidden = true;
  const body = {
    username: document.getElementById("username").value,
    password: document.getElementById("password").value,
  };
  let resp;
  try {
    resp = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    showError("Cannot reach the gateway.");
    return;
  }
  if (resp.ok) {
    window.location.assign("/");
    return;
  }
  if (resp.status === 429) {
    const wait = resp.headers.get("Retry-After") || "60";
    showError(`Too many failed attempts. Try again in ${wait} s.`);
  } else if (resp.status === 401) {
    showError("Wrong user name or password.");
  } else if (resp.status === 503) {
    showError("The gateway is busy checking other sign-ins. Try again in a moment.");
  } else if (resp.status === 403) {
    showError("Sign-in refused for this address: use a host name listed in gateway.allowed_hosts.");
  } else {
    showError(`Sign-in failed (${resp.status}).`);
  }
});

function showError(text) {
  error.textContent = text;
  error.hidden = false;
}
