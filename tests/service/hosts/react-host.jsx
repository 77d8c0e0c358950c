// A minimal React dashboard: the dependency and two lines (the import, the element).
import { createRoot } from "react-dom/client";
import "heta-client/component";

const query = new URLSearchParams(location.search);

function Panel() {
  return (
    <section>
      <h2>React dashboard</h2>
      <heta-attribution id="live" job={query.get("job")} base-url={query.get("api")} apiKey={query.get("key")} />
    </section>
  );
}

window.renders = [];
document.addEventListener("heta-render", (e) => window.renders.push(e.detail));
createRoot(document.getElementById("root")).render(<Panel />);
