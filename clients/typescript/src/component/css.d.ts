// styles.css is bundled as text (esbuild's text loader) into the element's shadow root
declare module "*.css" {
  const text: string;
  export default text;
}
