//! Placeholder until the template engine lands (being written now).
#[derive(Debug, Clone)]
pub struct Template(String);
#[derive(Debug, thiserror::Error)]
#[error("template error")]
pub struct Error;
impl Template {
    pub fn parse(text: &str) -> Result<Template, Error> {
        Ok(Template(text.to_string()))
    }
    pub fn uses_field(&self, name: &str) -> bool {
        self.0.contains(&format!(".{name}"))
    }
}
